"""renderers/neural"""
