"""kombu's errors, for the modules that talk to the broker through Celery and must tell a lost broker apart."""

from kombu.exceptions import OperationalError as BrokerOperationalError

__all__ = ["BrokerOperationalError"]
