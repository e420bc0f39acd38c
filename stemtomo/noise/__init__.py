"""stemtomo.noise"""
