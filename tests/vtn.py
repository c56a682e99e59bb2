"""The loopback OpenADR VTN of the system tests: cellos_energy's test peer (plain HTTP or TLS)."""
from loopback_vtn import LoopbackVtn, Pki, free_port, make_pki  # noqa: F401
