"""recon/bench"""
