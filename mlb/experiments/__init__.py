"""Programs beside the library: ``mlb bench`` (:mod:`mlb.experiments.bench`) measures the
library's parts, ``mlb reproduce`` (:mod:`mlb.experiments.reproduce`) reruns the paper's
experiments. Nothing in the library imports them."""
