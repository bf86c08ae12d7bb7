"""A throwaway certificate authority made with the `openssl` command."""

import shutil
from pathlib import Path

from .procs import run

# Days of validity. Test runs last minutes; a day leaves room for a slow
# machine without keeping usable keys around for long.
VALID_DAYS = 1


class TestCa:
    """A CA key and certificate in `directory`, and server certs it issues."""

    # Keep pytest from collecting this class because its name starts with
    # "Test".
    __test__ = False

    def __init__(self, directory):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.cert = self.directory / "ca.crt"
        self.key = self.directory / "ca.key"
        run(
            [
                "openssl", "req", "-x509", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", self.key, "-out", self.cert,
                "-days", VALID_DAYS, "-subj", "/CN=gatecache integration test CA",
                "-addext", "basicConstraints=critical,CA:TRUE",
                "-addext", "keyUsage=critical,keyCertSign,cRLSign",
            ],
            timeout=30,
        )

    def issue_server(self, name, names=("localhost", "127.0.0.1", "::1")):
        """Issue a server certificate for `names` and return (cert, key).

        IP literals become IP subjectAltNames and everything else DNS names.
        """
        cert = self.directory / f"{name}.crt"
        key = self.directory / f"{name}.key"
        csr = self.directory / f"{name}.csr"
        extensions = self.directory / f"{name}.ext"
        sans = ",".join(
            f"IP:{n}" if _is_ip_literal(n) else f"DNS:{n}" for n in names
        )
        extensions.write_text(
            f"subjectAltName={sans}\n"
            "basicConstraints=critical,CA:FALSE\n"
            "keyUsage=critical,digitalSignature\n"
            "extendedKeyUsage=serverAuth\n"
        )
        run(
            [
                "openssl", "req", "-new", "-newkey", "ec",
                "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={names[0]}",
            ],
            timeout=30,
        )
        run(
            [
                "openssl", "x509", "-req", "-in", csr, "-CA", self.cert,
                "-CAkey", self.key, "-CAcreateserial", "-out", cert,
                "-days", VALID_DAYS, "-extfile", extensions,
            ],
            timeout=30,
        )
        return cert, key


def cert_dir(directory, cafile):
    """Make a directory holding `cafile` as ca.crt and return its path.

    skopeo's --src-cert-dir and --dest-cert-dir take such a directory and
    trust every *.crt file in it as a CA.
    """
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    shutil.copyfile(cafile, directory / "ca.crt")
    return directory


def _is_ip_literal(name):
    return ":" in name or name.replace(".", "").isdigit()
