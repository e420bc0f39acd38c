"""stemtomo.recon"""
