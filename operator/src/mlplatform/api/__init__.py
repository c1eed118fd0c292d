"""Typed models of the platform's custom resources, and the status conditions they share."""
