"""The local cluster's certificates, made with openssl: one CA, a serving certificate for
the API server, and client certificates whose subject is the identity RBAC and the Node
authorizer know (``CN=system:node:<name>, O=system:nodes`` for a kubelet)."""

from __future__ import annotations

import subprocess
from pathlib import Path

from .workspace import ClusterError

KEY_ALGORITHM = ["-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1"]  # fast to make, accepted by Go


def _openssl(*args: str, cwd: Path) -> None:
    proc = subprocess.run(["openssl", *args], cwd=cwd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ClusterError(f"openssl {args[0]} failed: {proc.stderr.strip()}")


class PKI:
    def __init__(self, directory: Path):
        self.dir = directory

    @property
    def ca(self) -> Path:
        return self.dir / "ca.crt"

    def cert(self, name: str) -> Path:
        return self.dir / f"{name}.crt"

    def key(self, name: str) -> Path:
        return self.dir / f"{name}.key"

    def ensure_ca(self) -> None:
        self.dir.mkdir(parents=True, exist_ok=True)
        if self.ca.exists():
            return
        _openssl("req", "-x509", "-new", "-nodes", *KEY_ALGORITHM, "-keyout", "ca.key", "-out", "ca.crt", "-days", "3650",
                 "-subj", "/CN=ingestion-dev-ca", "-addext", "basicConstraints=critical,CA:TRUE",
                 "-addext", "keyUsage=critical,keyCertSign,cRLSign,digitalSignature", cwd=self.dir)
        self.key("ca").chmod(0o600)

    def issue(self, name: str, cn: str, org: str | None = None, ips: list[str] = (), dns: list[str] = (),
              server: bool = False) -> None:
        """A certificate signed by the CA; re-issued whenever asked (the SANs may have changed)."""
        self.ensure_ca()
        subject = f"/CN={cn}" + (f"/O={org}" if org else "")
        ext = [f"extendedKeyUsage={'serverAuth' if server else 'clientAuth'}", "keyUsage=critical,digitalSignature",
               "basicConstraints=critical,CA:FALSE"]
        sans = [f"IP:{ip}" for ip in ips] + [f"DNS:{d}" for d in dns]
        if sans:
            ext.append("subjectAltName=" + ",".join(sans))
        (self.dir / f"{name}.ext").write_text("\n".join(ext) + "\n")
        _openssl("req", "-new", "-nodes", *KEY_ALGORITHM, "-keyout", f"{name}.key", "-out", f"{name}.csr", "-subj", subject,
                 cwd=self.dir)
        _openssl("x509", "-req", "-in", f"{name}.csr", "-CA", "ca.crt", "-CAkey", "ca.key", "-CAcreateserial",
                 "-out", f"{name}.crt", "-days", "365", "-extfile", f"{name}.ext", cwd=self.dir)
        self.key(name).chmod(0o600)
