from tests.scoring.sandbox_support import sandbox_available

__all__ = ["sandbox_available"]
