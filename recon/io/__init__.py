"""recon/io"""
