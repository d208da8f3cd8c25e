"""Vertical federated learning: parties hold different columns of the same people.

Pure protocol modules (no bus, no LMDB): `psi` (ECDH private set intersection:
X25519 over ids hashed to curve25519's prime-order group), `paillier` (vectors
of Paillier ciphertexts and a plain stand-in with the same interface), `lr`
(the hetero logistic-regression math).
`conversation` is the thin message layer the roles in
services/executor/algorithms/vertical_*.py talk through; `alignment` reads a
party's rows in the order a PSI step agreed.
"""
