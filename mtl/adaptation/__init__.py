"""Domain adaptation: gradient reversal, DANN, ADDA, generated target domains, and the measured
H-divergence (proxy A-distance) between domains.

- :func:`proxy_a_distance` — ``d_A = 2 (1 - 2 err)`` of a domain classifier (Ben-David et al. 2007);
- :class:`GradientReversal`, :func:`ganin_lambda` — the reversal layer and its schedule (Ganin and Lempitsky 2015);
- :func:`train_dann` — DANN (Ganin and Lempitsky 2015); :func:`train_adda` — ADDA (Tzeng et al. 2017);
- :func:`train_source_only`, :func:`train_target_supervised`, :func:`adapt_batch_norm` — references;
- :func:`make_target_domain`, :func:`make_domain_split` — reproducible shifted target domains;
- :func:`plot_domain_features` — a 2-D (PCA) view of both domains' features.
"""

from mtl.adaptation.adda import ADDAConfig, train_adda
from mtl.adaptation.baselines import adapt_batch_norm, train_source_only, train_target_supervised
from mtl.adaptation.common import (
    AdaptationResult,
    AdaptConfig,
    build_classifier,
    check_domains,
    domain_discriminator,
    extract_features,
    random_translate,
)
from mtl.adaptation.dann import DANN, DANNConfig, train_dann
from mtl.adaptation.divergence import ProxyADistance, proxy_a_distance
from mtl.adaptation.experiment import (
    METHODS,
    DomainSplit,
    evaluate_adaptation,
    gap_recovered,
    make_domain_split,
    run_methods,
)
from mtl.adaptation.grl import GradientReversal, ganin_lambda, grad_reverse
from mtl.adaptation.projection import pca_2d, plot_domain_features
from mtl.adaptation.shifts import SHIFTS, make_target_domain, source_domain

__all__ = [
    "ADDAConfig",
    "DANN",
    "DANNConfig",
    "METHODS",
    "SHIFTS",
    "AdaptConfig",
    "AdaptationResult",
    "DomainSplit",
    "GradientReversal",
    "ProxyADistance",
    "adapt_batch_norm",
    "build_classifier",
    "check_domains",
    "domain_discriminator",
    "evaluate_adaptation",
    "extract_features",
    "ganin_lambda",
    "gap_recovered",
    "grad_reverse",
    "make_domain_split",
    "make_target_domain",
    "pca_2d",
    "plot_domain_features",
    "proxy_a_distance",
    "random_translate",
    "run_methods",
    "source_domain",
    "train_adda",
    "train_dann",
    "train_source_only",
    "train_target_supervised",
]
