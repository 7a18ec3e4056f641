"""Sentinel: watches VOS3000 CDRs and tells the NOC what is failing and how to fix it.

Data flows one way: sources -> store -> metrics -> rules (durable_rules) ->
alerts -> notifiers; the bot reads the store and the knowledge base.
"""

__version__ = "0.1.0"
