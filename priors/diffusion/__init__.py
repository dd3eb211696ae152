"""priors/diffusion"""
