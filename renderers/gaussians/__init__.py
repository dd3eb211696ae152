"""renderers/gaussians"""
