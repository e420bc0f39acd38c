"""stemtomo.denoise"""
