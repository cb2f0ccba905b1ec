"""lvs.cf: grammar (text -> tree), model (typed objects), validation, writer."""
