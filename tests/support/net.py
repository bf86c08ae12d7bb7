"""Loopback ports and TLS readiness checks."""

import socket
import ssl
import time

LOOPBACK = "127.0.0.1"


def free_port(host=LOOPBACK):
    """Return a TCP port on `host` that was free a moment ago.

    Another process can take the port between this call and the bind by the
    server under test, so callers that start a server retry on a bind error.
    """
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        return sock.getsockname()[1]


def client_context(cafile, alpn=("http/1.1",)):
    """Return a TLS client context that trusts only `cafile`."""
    context = ssl.create_default_context(cafile=str(cafile))
    if alpn:
        context.set_alpn_protocols(list(alpn))
    return context


def tls_ready(host, port, cafile=None, server_hostname=None):
    """Return True when a TLS handshake with host:port succeeds.

    Without `cafile` the certificate is not checked, because a caller may
    poll a server before its CA file exists.
    """
    if cafile:
        context = client_context(cafile, alpn=None)
    else:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    try:
        with socket.create_connection((host, port), timeout=2) as raw:
            with context.wrap_socket(
                raw, server_hostname=server_hostname or host
            ):
                return True
    except (OSError, ssl.SSLError):
        return False


def wait_tls_ready(process, host, port, timeout, cafile=None):
    """Wait until `process` completes TLS handshakes on host:port.

    Raises the process's ProcessError as soon as it exits, and TimeoutError
    with its stderr tail when `timeout` seconds pass.
    """
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        process.check_running()
        if tls_ready(host, port, cafile):
            return
        time.sleep(0.05)
    raise TimeoutError(
        f"{process.name} did not accept TLS on {host}:{port} within "
        f"{timeout} s\n{process.describe()}"
    )
