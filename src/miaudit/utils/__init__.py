"""Small shared helpers: seeding, fingerprints, atomic output folders."""
