"""The namespace lab (lab.py), a pulse pair on it (testbed.py) and ``make demo`` (demo.py).

Test and demo infrastructure, run from a checkout: not part of the installed package.
"""
