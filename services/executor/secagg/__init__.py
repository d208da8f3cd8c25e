"""Secure aggregation (Bonawitz et al., CCS 2017, "Practical Secure Aggregation for
Privacy-Preserving Machine Learning"), the variant with a consistency check.

Per training round, the aggregator learns the sum of the surviving clients'
quantized updates and nothing else about any single one, as long as fewer than
t clients collude with it; up to n - t clients may drop out at any stage.

Message flow of round r (C = client, S = aggregator; every arrow is one signed
RoundMessage of kind SECAGG, after the plain ANNOUNCE):
    S -> all   ANNOUNCE  global model, sample, clip, weight scale      (plain kind)
    C -> S     ADVERTISE c_pk, s_pk (fresh X25519), identity key       => U1
    S -> all   KEYS      every advertisement of U1 (client-signed), t
    C -> S     SHARES    AES-GCM to each v: Shamir shares of b_u, s_u   => U2
    S -> C     SHARES_IN the ciphertexts addressed to C
    C -> S     MASKED    y_u = q_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv) => U3
    S -> all   SURVIVORS U3
    C -> S     CONSISTENCY  signature over U3                           => U4
    S -> all   SIGNATURES   U3 and t signatures on it
    C -> S     UNMASK    b-shares of U3, s-shares of U2 \\ U3 (never both) => U5
    S          sum y - PRG(b_v) -/+ PRG(s_dv), dequantize, strategy.server_step

With graph="sparse" (flow param secagg_graph, SecAgg+ of Bell et al. 2020; graph.py) each
client does all of the above only with its k = O(log n) neighbours in a random Harary graph
derived from the signed round setup: KEYS carries its neighbourhood, SHARES go to its
neighbours, pairwise masks are its neighbours', and t is relative to the k + 1 share holders.

Layout: pure core (shamir, crypto, messages, client, server, encoding, keys, graph)
and the I/O shell (shell) that maps stage messages onto the round channel.
"""

from .client import ClientState, client_start, client_step
from .crypto import RoundContext
from .encoding import DEFAULT_CLIP, Decoded, decode_sum, encode_update, quant_config
from .errors import (BadCiphertext, BadSignature, LateMessage, NotEnoughShares, ProtocolViolation, SecAggError,
                     TooFewClients, UntrustedKey)
from .keys import KeyRing
from .messages import Signed, Stage, threshold_for
from .server import ServerState, server_advance, server_receive, server_result, server_start

__all__ = ["BadCiphertext", "BadSignature", "ClientState", "DEFAULT_CLIP", "Decoded", "KeyRing", "LateMessage",
           "NotEnoughShares", "ProtocolViolation", "RoundContext", "SecAggError", "ServerState", "Signed",
           "Stage", "TooFewClients", "UntrustedKey", "client_start", "client_step", "decode_sum",
           "encode_update", "quant_config", "server_advance", "server_receive", "server_result",
           "server_start", "threshold_for"]
