"""Fault and hostile-input suite (issue 8): bad input, hand-edited manifests, forged artifacts, secrets, modes."""
