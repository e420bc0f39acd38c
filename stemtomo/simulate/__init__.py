"""stemtomo.simulate"""
