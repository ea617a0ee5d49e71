"""Closed forms from docs/theory.md that models, objectives, tests and the claims suite compare against: Gaussian
kernels and the population loss (kernels), linear-network gradient-flow times and trajectories (linear), and
infinite-width NTK Grams (ntk). Depends on torch, numpy and scipy only, so any module may import it."""
from dynamics_bench.theory.fits import Fit, exponential, line, power_law, time_to_reach
from dynamics_bench.theory.kernels import KERNELS, gaussian_kernel, population_loss
from dynamics_bench.theory.linear import (balanced_mode_strength, balanced_mode_time, saxe_mode_strength, saxe_time,
                                          scalar_product_time, vector_case_time)
from dynamics_bench.theory.ntk import du_gram, ntk_mlp, ntk_two_layer, relu_moments

__all__ = ["KERNELS", "gaussian_kernel", "population_loss", "balanced_mode_strength", "balanced_mode_time",
           "saxe_mode_strength", "saxe_time", "scalar_product_time", "vector_case_time", "du_gram", "ntk_mlp",
           "ntk_two_layer", "relu_moments", "Fit", "exponential", "line", "power_law", "time_to_reach"]
