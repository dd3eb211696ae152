"""renderers/mesh"""
