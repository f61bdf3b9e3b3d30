"""The institutions' own word in the audit trail.

Each institution signs (run, round, its name, SHA-256 of the update it sends) with its kit key
(`client.key`; a simulation's institutions with keys of the run's own CA); the server stores
the signature and the institution's certificate. Whoever rewrites an update digest, or claims
an institution contributed when it did not, cannot make that institution's signature, even
holding the server's key.

In deployment the server also returns a receipt with every accepted update: the same facts
signed with its own key (`server.key`). The institution keeps its receipts
(`fedsilo client --receipts FILE`); `fedsilo audit verify --receipts FILE` shows whether the
trail records every update the server acknowledged (a removed round, a rewritten digest).
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Mapping
from typing import Any

from cryptography import x509
from cryptography.exceptions import InvalidSignature

from fedsilo.aggregation.secure.identity import RECEIPT, common_name, contribution_message
from fedsilo.store import signing
from fedsilo.store.audit import INSTITUTION
from fedsilo.store.values import fit

RECEIPT_FIELDS = ("run", "round", "institution", "digest", "signature", "certificate")


def check_signed(run_id: str, participation: Iterable[Mapping[str, Any]],
                 signatures: Mapping[tuple[int, str], Mapping[str, Any]],
                 certificates: Mapping[str, str], ca: bytes | None,
                 required: bool) -> tuple[str, int | None, int]:
    """Check each accepted update's signature by its institution.

    Args:
        signatures: (round, institution) -> its row (signed_round, signature, certificate:
            the SHA-256 of the certificate it signed with).
        certificates: SHA-256 -> a certificate stored with the run.
        ca: the project CA: each certificate must be issued by it.
        required: every accepted update must be signed (a deployment checked with its kit,
            or a run where institutions signed at all).

    Returns:
        (problem, its round, updates whose signature verified); problem "" when none.
    """
    good = 0
    for p in participation:
        if p["status"] != "accepted" or not p["update_digest"]:
            continue
        name, rnd = p["institution"], p["round"]
        row = signatures.get((rnd, name))
        pem = certificates.get(row["certificate"]) if row is not None else None
        if row is None or pem is None:
            if required:
                return (f"round {rnd}: the update recorded for '{name}' carries no signature "
                        f"of '{name}' (removed, or the contribution was never its own)",
                        rnd, good)
            continue
        why = _certificate_problem(pem, name, ca)
        message = contribution_message(run_id, row["signed_round"], name, p["update_digest"])
        if not why and not signing.verifies(pem, message, row["signature"]):
            why = ("its signature does not match the recorded update digest (the digest was "
                   "rewritten, or the signature forged)")
        if why:
            return f"round {rnd}: the update recorded for '{name}': {why}", rnd, good
        good += 1
    return "", None, good


def _certificate_problem(pem: str, name: str, ca: bytes | None) -> str:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError:
        return "its stored certificate is not a PEM certificate"
    if fit(common_name(cert), INSTITUTION) != name:
        return f"its stored certificate is issued to '{common_name(cert)}'"
    if ca is not None:
        try:
            cert.verify_directly_issued_by(x509.load_pem_x509_certificate(ca))
        except (ValueError, TypeError, InvalidSignature):
            return "its certificate is not issued by the project CA"
    return ""


def make_receipt(signer: signing.AuditSigner, run_id: str, round: int, institution: str,
                 digest: str) -> str:
    """The server's signed acknowledgement of an accepted update (one JSON line)."""
    signature = signer.sign_bytes(RECEIPT + contribution_message(run_id, round, institution,
                                                                 digest))
    return json.dumps({"run": run_id, "round": round, "institution": institution,
                       "digest": digest, "signature": signature,
                       "certificate": signer.certificate}, sort_keys=True)


def read_receipts(lines: Iterable[str]) -> list[dict[str, Any]]:
    """Receipts from a receipts file's lines; a line that is not one is reported as such."""
    out = []
    for i, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            receipt = json.loads(line)
        except ValueError:
            receipt = None
        if not isinstance(receipt, dict) or any(k not in receipt for k in RECEIPT_FIELDS):
            receipt = {"line": i, "broken": True}
        out.append({**receipt, "line": i})
    return out


def check_receipts(run_id: str, receipts: list[dict[str, Any]],
                   participation: Iterable[Mapping[str, Any]], server_certificate: str,
                   ca: bytes | None) -> tuple[list[str], int]:
    """Compare an institution's receipts for run `run_id` with the trail.

    Returns:
        (one problem per receipt the trail contradicts, receipts of this run checked).
    """
    accepted = {(p["institution"], p["update_digest"]) for p in participation
                if p["status"] == "accepted"}
    problems, checked = [], 0
    for r in receipts:
        if r.get("broken"):
            problems.append(f"receipts line {r['line']}: not a receipt")
            continue
        if r["run"] != run_id:
            continue
        checked += 1
        where = f"receipt of round {r['round']} ({r['institution']})"
        message = RECEIPT + contribution_message(run_id, int(r["round"]), r["institution"],
                                                 r["digest"])
        if not signing.verifies(r["certificate"], message, r["signature"]):
            problems.append(f"{where}: not signed by the key of its certificate (forged)")
        elif r["certificate"] != server_certificate and (
                ca is None or signing.issued_by(r["certificate"], ca)):
            problems.append(f"{where}: signed by another key than the one that signs the "
                            f"trail" + ("" if ca is None else " or the project's server"))
        elif (fit(r["institution"], INSTITUTION), r["digest"]) not in accepted:
            problems.append(f"{where}: the server acknowledged update {r['digest'][:12]}… "
                            f"but the trail does not record it as accepted (the round was "
                            f"removed or rewritten, or it failed after acceptance)")
    return problems, checked
