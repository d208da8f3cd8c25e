"""The splitter's pure core: flow documents in, planned tasks or field-level rejections out."""

from services.splitter.core.decide import Accepted, Decision, Rejected, decide
from services.splitter.core.flow_document import parse_flow_document
from services.splitter.core.planning import plan_flow
from services.splitter.core.validation import FlowLimits, validate_flow

__all__ = ["Accepted", "Decision", "FlowLimits", "Rejected", "decide", "parse_flow_document", "plan_flow",
           "validate_flow"]
