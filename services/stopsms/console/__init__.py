"""The regulator's side of the platform.

Complaints assessed against the evidence (:mod:`stopsms.console.assessor`); cases, the
regulator's service and the CNDP's console are to come here.
"""
