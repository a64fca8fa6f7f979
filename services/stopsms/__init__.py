"""StopSMS: the shared opt-out platform of Moroccan mobile operators and SMS service providers.

Three services talk over Kafka: ``intake`` accepts citizens' requests, ``registry`` decides and
keeps the suppression list, ``notifier`` fans the changes out and proves their propagation.
"""
