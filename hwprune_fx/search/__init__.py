"""Searches that choose which channels go: opti-cut (HFP), uniform and flops baselines."""
from __future__ import annotations

from hwprune_fx.search.budget import Budget, parse_budget
from hwprune_fx.search.hilp import hilp_search
from hwprune_fx.search.opti_cut import SearchResult, SearchStep, opti_cut
from hwprune_fx.search.uniform import uniform_search

__all__ = ["Budget", "parse_budget", "SearchResult", "SearchStep", "opti_cut", "uniform_search", "hilp_search"]
