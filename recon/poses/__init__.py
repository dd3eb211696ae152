"""recon/poses"""
