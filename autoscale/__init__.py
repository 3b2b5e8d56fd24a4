"""Autoscaling keyed to reasoning-effort budgets (demand model, Serve policies, admission)."""
