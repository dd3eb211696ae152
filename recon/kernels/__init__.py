"""recon/kernels"""
