"""Datasets the package ships for evaluation (MIT licences beside each)."""
