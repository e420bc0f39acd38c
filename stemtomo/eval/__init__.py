"""stemtomo.eval"""
