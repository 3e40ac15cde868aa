"""Game-theoretic interactions of image and text units (LOUPE, Li et al., NeurIPS 2022).

``games``: cooperative games (a two-tower model's pair, synthetic polynomials);
``shapley``: exact and Monte Carlo Shapley values and coalition interactions;
``neural``: the uncertainty-aware neural estimator and its sampling fallback.
"""
