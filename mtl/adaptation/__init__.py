"""Domain adaptation: measured H-divergence (proxy A-distance), and adversarial adaptation."""

from mtl.adaptation.divergence import ProxyADistance, proxy_a_distance

__all__ = ["ProxyADistance", "proxy_a_distance"]
