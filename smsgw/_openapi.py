"""The OpenAPI 3.1 document of the REST API, written out by hand.

It is kept apart from the router on purpose: tests/test_api.py checks that both
name the same operations and that real responses validate against these schemas,
so a change to one without the other fails a test instead of misleading a reader.
"""

from __future__ import annotations

from typing import Any

from smsgw._api_codec import MAX_EPOCH, MO_LIMIT_DEFAULT, MO_LIMIT_MAX, SEND_FIELDS
from smsgw._review_codec import (
    ACTION_FIELDS,
    COMMENT_MAX,
    FILTERS,
    IDS_MAX,
    REVIEW_LIMIT_DEFAULT,
    REVIEW_LIMIT_MAX,
    STATES,
)
from smsgw.review_export import CONTENT_TYPES, EXPORT_MAX_ROWS

ERROR_CODES = ("bad_request", "unauthorized", "forbidden", "not_found", "method_not_allowed",
               "payload_too_large", "unsupported_media_type", "validation_failed", "unavailable",
               "internal_error", "too_many_requests", "rate_limited", "quota_exceeded",
               "reviewer_required", "unknown_reviewer", "nothing_to_cancel", "export_too_large")

_TIME = {"type": "string", "format": "date-time",
         "description": 'ISO-8601 in UTC with milliseconds, e.g. "2024-03-05T00:00:00.000Z"'}
_TIME_OR_NULL = {**_TIME, "type": ["string", "null"]}
_STRING_OR_NULL = {"type": ["string", "null"]}


def _ref(name: str) -> dict[str, str]:
    return {"$ref": f"#/components/schemas/{name}"}


def _obj(properties: dict[str, Any], *, required: tuple[str, ...] | None = None, **extra: Any) -> dict[str, Any]:
    """A closed object schema; every property is required unless `required` says otherwise."""
    return {"type": "object", "properties": properties,
            "required": list(properties if required is None else required),
            "additionalProperties": False, **extra}


def _schemas(max_batch: int) -> dict[str, Any]:
    send_request = _obj({
        "to": {"description": "One mobile number or several (the same text goes to each).",
               "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string"}, "minItems": 1}],
               "examples": ["13800138000", ["13800138000", "13900139000"]]},
        "text": {"type": "string", "description": "The message text; long texts are sent as several segments. "
                                                  "Required unless a template is named."},
        "template": {**_STRING_OR_NULL, "description": "A named template (GET /api/v1/templates) that makes "
                                                       "the text from params; give either text or template."},
        "params": {"type": ["object", "null"], "additionalProperties": {"type": ["string", "number"]},
                   "description": "The template's parameters: every placeholder, no others.",
                   "examples": [{"code": "123456"}]},
        "priority": {"description": "0 (bulk) to 9 (urgent), or a name: urgent = 9, normal = 5, bulk = 0.",
                     "anyOf": [{"type": "integer", "minimum": 0, "maximum": 9},
                               {"type": "string", "enum": ["urgent", "normal", "bulk"]}],
                     "default": "normal"},
        "send_at": {"description": "When to send: ISO-8601 with a UTC offset (a time without one is "
                                   "refused) or epoch seconds; null or absent: now.",
                    "anyOf": [{"type": "string", "format": "date-time"},
                              {"type": "number", "minimum": 0, "maximum": MAX_EPOCH}, {"type": "null"}]},
        "ext": {**_STRING_OR_NULL, "description": "Extension appended to the service number; "
                                                  "null or absent: the account's default."},
        "ref": {**_STRING_OR_NULL, "description": "Your own reference, echoed back. Resending with the same "
                                                  "ref is how to retry safely after a timeout."},
        "report": {"type": "boolean", "default": True, "description": "Whether a status report is wanted."},
        "batch": {**_STRING_OR_NULL, "description": "Your name for the batch this message belongs to (one "
                                                    "import, one mass send): reviewed and cancelled as a unit. "
                                                    "Absent: the messages of this request form one batch."},
        "batch_size": {"type": ["integer", "null"], "minimum": 1,
                       "description": "Recipients in the whole batch, when it takes several requests: review "
                                      "rules for mass sends count them."},
    }, required=("to",), anyOf=[{"required": ["text"]},  # text, or a template's name (then text may be left out)
                                {"required": ["template"], "properties": {"template": {"type": "string"}}}])
    assert tuple(send_request["properties"]) == SEND_FIELDS
    problem = _obj({"where": {"type": "string", "description": 'Where in the request, e.g. "[0].to[2]"; '
                                                               '"" for the body as a whole.'},
                    "code": {"type": "string", "description": "required, unknown_field, wrong_type, ..."},
                    "message": {"type": "string"}})
    segment = _obj({"number": {"type": "integer"}, "total": {"type": "integer"},
                    "msg_id": _STRING_OR_NULL, "state": {"type": "string"},
                    "stat": {**_STRING_OR_NULL, "description": "The carrier's report code, e.g. DELIVRD."},
                    "submitted_at": _TIME_OR_NULL, "reported_at": _TIME_OR_NULL})
    recipient = _obj({"to": {"type": "string"}, "state": {"type": "string"}, "link": _STRING_OR_NULL,
                      "attempts": {"type": "integer"}, "error": _STRING_OR_NULL, "stat": _STRING_OR_NULL,
                      "updated_at": _TIME, "segments": {"type": "array", "items": _ref("SegmentView")}})
    return {
        "SendRequest": send_request,
        "SendBody": {"anyOf": [_ref("SendRequest"), {"type": "array", "items": _ref("SendRequest"),
                                                      "minItems": 1, "maxItems": max_batch}]},
        "AcceptedMessage": _obj({"id": {"type": "string"}, "ref": _STRING_OR_NULL,
                                 "recipients": {"type": "integer"},
                                 "segments": {"type": "integer", "description": "Segments per recipient."},
                                 "dropped_duplicates": {"type": "array", "items": {"type": "string"}},
                                 "repeated": {"type": "boolean", "description": "The ref was accepted before: "
                                              "this is the stored message, not sent again."},
                                 "held": {"type": "boolean", "description": "A review rule holds it until a "
                                          "reviewer approves it (docs/review.md)."},
                                 "batch": {**_STRING_OR_NULL, "description": "The batch it belongs to."}}),
        "AcceptResponse": _obj({"messages": {"type": "array", "items": _ref("AcceptedMessage"),
                                             "description": "One entry per message sent, in order."}}),
        "SegmentView": segment,
        "RecipientView": recipient,
        "MessageView": _obj({"id": {"type": "string"}, "account": {"type": "string"},
                             "interface": {"type": "string"}, "ref": _STRING_OR_NULL, "text": {"type": "string"},
                             "priority": {"type": "integer"}, "send_at": _TIME_OR_NULL,
                             "state": {"type": "string"}, "created_at": _TIME, "updated_at": _TIME,
                             "recipients": {"type": "array", "items": _ref("RecipientView")}}),
        "MoMessage": _obj({"id": {"type": "string"}, "link": {"type": "string"}, "src": {"type": "string"},
                           "dest": {"type": "string", "description": "Service number plus extension."},
                           "ext": {"type": "string"}, "text": {"type": "string"}, "consumer": _STRING_OR_NULL,
                           "received_at": _TIME, "parts": {"type": "integer"}, "complete": {"type": "boolean"}}),
        "MoPage": _obj({"items": {"type": "array", "items": _ref("MoMessage")},
                        "next_cursor": {**_STRING_OR_NULL,
                                        "description": "Pass as cursor to get what follows. An empty "
                                                       "page keeps the cursor: poll again later with it. "
                                                       "null: nothing yet and no cursor was given."}}),
        "GatewayStatus": _obj({"node": {"type": "string"}, "accepting": {"type": "boolean"},
                               "links": {"type": "array", "items": {"type": "object"}},
                               "queues": {"type": "object", "additionalProperties": {"type": "integer"}},
                               "rates": {"type": "object", "additionalProperties": {"type": "number"}}}),
        "Template": _obj({"name": {"type": "string"},
                          "text": {"type": "string", "description": "With {parameter} placeholders; {{ and }} "
                                                                    "are literal braces."},
                          "params": {"type": "array", "items": {"type": "string"},
                                     "description": "The placeholders, in order of first appearance."},
                          "pre_approved": {"type": "boolean", "description": "Messages rendered from it may "
                                                                             "skip content review."},
                          "updated_at": _TIME, "updated_by": {"type": "string"}}),
        "TemplateList": _obj({"templates": {"type": "array", "items": _ref("Template")}}),
        "TemplateBody": _obj({"text": {"type": "string"}, "pre_approved": {"type": "boolean", "default": False}},
                             required=("text",)),
        **_review_schemas(),
        "Problem": problem,
        "Error": _obj({"error": _obj({"code": {"type": "string", "enum": list(ERROR_CODES)},
                                      "message": {"type": "string"},
                                      "details": {"type": "array", "items": _ref("Problem")}})}),
    }


def _review_schemas() -> dict[str, Any]:
    filters = {
        "content": {"type": "string", "description": "Messages whose text holds this (case as written)."},
        "to": {"type": "string", "description": "Messages with this recipient (written any way a recipient may "
                                                "be: +86 138 0013 8000 finds 13800138000)."},
        "account": {"type": "string", "description": "The sending account."},
        "interface": {"type": "string", "description": "rest, url, soap, file, auto_reply, db (every "
                                                       "legacy-database source) or db:<source>."},
        "state": {"description": f"Review states ({', '.join(STATES)}) or any; several comma-separated or as a "
                                 "list. Default: every message that was held for review.",
                  "anyOf": [{"type": "string"}, {"type": "array", "items": {"type": "string", "enum": [*STATES,
                                                                                                     "any"]}}]},
        "batch": {"type": "string", "description": "A batch as stored: \"<account>:<name>\", or the first "
                                                   "message id of a request that named none."},
        "since": {"description": "Created at or after: ISO-8601 with a UTC offset, or epoch seconds.",
                  "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0, "maximum": MAX_EPOCH}]},
        "until": {"description": "Created before (same forms as since).",
                  "anyOf": [{"type": "string"}, {"type": "number", "minimum": 0, "maximum": MAX_EPOCH}]},
    }
    assert tuple(filters) == FILTERS
    item = _obj({
        "id": {"type": "string"}, "account": {"type": "string"},
        "interface": {"type": "string", "description": "rest, url, soap, file, db:<source>, auto_reply."},
        "batch": _STRING_OR_NULL, "ref": _STRING_OR_NULL, "text": {"type": "string"},
        "template": {**_STRING_OR_NULL, "description": "The template it was rendered from."},
        "recipients": {"type": "integer", "description": "How many numbers it goes to."},
        "numbers": {"type": "array", "items": {"type": "string"},
                    "description": "The list shows the first 5; GET /api/v1/review/{id} shows all."},
        "priority": {"type": "integer"}, "send_at": _TIME_OR_NULL, "created_at": _TIME,
        "state": {"type": "string", "description": "The message's state: pending_review, accepted, completed."},
        "review": {"type": "string", "enum": list(STATES)},
        "rule": {**_STRING_OR_NULL, "description": "The review rule that decided (account.needs_review when "
                                                   "only the account's flag held it)."},
        "deadline": {**_TIME_OR_NULL, "description": "When the rule's time limit runs out (pending only)."},
        "reviewed_by": _STRING_OR_NULL, "reviewed_at": _TIME_OR_NULL, "comment": _STRING_OR_NULL})
    schemas = {
        "ReviewMessage": item,
        "ReviewPage": _obj({"items": {"type": "array", "items": _ref("ReviewMessage")},
                            "total": {"type": "integer", "description": "Messages matching the filters."},
                            "total_recipients": {"type": "integer",
                                                 "description": "Recipients of all matching messages."},
                            "offset": {"type": "integer"}, "limit": {"type": "integer"}}),
        "ReviewFilter": _obj(filters, required=()),
        "ReviewAction": _obj({
            "ids": {"type": "array", "items": {"anyOf": [{"type": "string"}, {"type": "integer"}]},
                    "minItems": 1, "maxItems": IDS_MAX, "description": "Message ids."},
            "batch": {"type": "string", "description": "A batch as stored."},
            "filter": _ref("ReviewFilter"),
            "all": {"type": "boolean", "default": False,
                    "description": "Required with a filter that narrows nothing (only state, or {}): it "
                                   "confirms acting on every message waiting for review."},
            "comment": {"type": "string", "description": f"Why (at most {COMMENT_MAX} characters); required "
                                                         "to reject: the sender is told."},
            "reviewer": {"type": "string", "description": "The configured reviewer acting (or the "
                                                          "X-Smsgw-Reviewer header)."},
        }, required=(), description="Exactly one of ids, batch and filter."),
        "ReviewResult": _obj({"action": {"type": "string", "enum": ["approve", "reject"]},
                              "reviewer": {"type": "string"},
                              "messages": {"type": "array", "items": {"type": "string"},
                                           "description": "The messages it changed."},
                              "recipients": {"type": "integer", "description": "Recipients moved: queued "
                                                                               "(approve) or rejected."},
                              "unchanged": {"type": "array", "items": {"type": "string"},
                                            "description": "Ids named that were not waiting for review."}}),
        "CancelBody": _obj({"comment": {"type": "string"}}, required=()),
        "CancelResult": _obj({"messages": {"type": "array", "items": {"type": "string"}},
                              "recipients": {"type": "integer", "description": "Recipients cancelled."}}),
    }
    assert tuple(schemas["ReviewAction"]["properties"]) == ACTION_FIELDS
    return schemas


def _json(schema: dict[str, Any], description: str, **extra: Any) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}, **extra}


def _error(description: str, header: str | None = None) -> dict[str, Any]:
    extra = {"headers": {header: {"$ref": f"#/components/headers/{header}"}}} if header else {}
    return _json(_ref("Error"), description, **extra)


_AUTH_ERRORS = {
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "403": {"$ref": "#/components/responses/Forbidden"},
    "429": {"$ref": "#/components/responses/TooManyRequests"},
    "default": {"$ref": "#/components/responses/Error"},
}


_NAME_PARAM = [{"name": "name", "in": "path", "required": True, "schema": {"type": "string"}}]


def _paths(max_body_bytes: int) -> dict[str, Any]:
    return {
        "/api/v1/messages": {"post": {
            "operationId": "sendMessages",
            "parameters": [{"name": "X-Smsgw-Origin", "in": "header", "required": False,
                            "schema": {"type": "string", "enum": ["file"]},
                            "description": "file: the messages come from a file import (smsgw import); they "
                                           "are recorded with interface file, which the account must be "
                                           "allowed."}],
            "summary": "Send one message or a batch",
            "description": "Answers 202 once every message is committed to the store: an accepted message "
                           "survives a restart. A 503 after a timeout may still have committed: resend with "
                           "the same ref to find out without sending twice.",
            "requestBody": {"required": True, "content": {"application/json": {"schema": _ref("SendBody")}},
                            "description": f"At most {max_body_bytes} bytes of UTF-8 JSON."},
            "responses": {
                "202": _json(_ref("AcceptResponse"), "Committed; ids in the order sent."),
                "400": _error("Malformed JSON or not UTF-8."),
                "413": _error("The body is larger than the limit."),
                "415": _error("Content-Type is not application/json."),
                "422": _error("Not a valid request: details lists every problem."),
                "503": _error("Not accepting now, or no answer in time: retry later.", "Retry-After"),
                **_AUTH_ERRORS,
            },
        }},
        "/api/v1/messages/{id}": {"get": {
            "operationId": "getMessage",
            "summary": "One of your messages, with each recipient's and segment's state",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("MessageView"), "The message."),
                          "404": _error("No such message for this account."),
                          "503": _error("No answer in time: retry later.", "Retry-After"),
                          **_AUTH_ERRORS},
        }},
        "/api/v1/mo": {"get": {
            "operationId": "listMo",
            "summary": "Uplink (MO) messages for your account, oldest first",
            "parameters": [
                {"name": "cursor", "in": "query", "required": False, "schema": {"type": "string"},
                 "description": "next_cursor of the previous page; absent: from the start."},
                {"name": "limit", "in": "query", "required": False,
                 "schema": {"type": "integer", "minimum": 1, "maximum": MO_LIMIT_MAX,
                            "default": MO_LIMIT_DEFAULT}},
            ],
            "responses": {"200": _json(_ref("MoPage"), "A page of messages."),
                          "422": _error("An unknown or invalid query parameter."),
                          "503": _error("No answer in time: retry later.", "Retry-After"),
                          **_AUTH_ERRORS},
        }},
        "/api/v1/templates": {"get": {
            "operationId": "listTemplates",
            "summary": "Every named template",
            "responses": {"200": _json(_ref("TemplateList"), "The templates, by name."),
                          "503": _error("No answer in time: retry later.", "Retry-After"),
                          **_AUTH_ERRORS},
        }},
        "/api/v1/templates/{name}": {
            "get": {
                "operationId": "getTemplate",
                "parameters": _NAME_PARAM,
                "summary": "One template",
                "responses": {"200": _json(_ref("Template"), "The template."),
                              "404": _error("No template of that name."),
                              **_AUTH_ERRORS},
            },
            "put": {
                "operationId": "putTemplate",
                "parameters": _NAME_PARAM,
                "summary": "Add or change a template (needs the templates permission)",
                "requestBody": {"required": True,
                                "content": {"application/json": {"schema": _ref("TemplateBody")}}},
                "responses": {"200": _json(_ref("Template"), "Changed."),
                              "201": _json(_ref("Template"), "Added."),
                              "400": _error("Malformed JSON or not UTF-8."),
                              "415": _error("Content-Type is not application/json."),
                              "422": _error("A bad name or text: details says which and why."),
                              "503": _error("The store is unreachable: retry later.", "Retry-After"),
                              **_AUTH_ERRORS},
            },
            "delete": {
                "operationId": "deleteTemplate",
                "parameters": _NAME_PARAM,
                "summary": "Delete a template (needs the templates permission)",
                "responses": {"200": _json(_obj({"deleted": {"type": "string"}}), "Deleted."),
                              "404": _error("No template of that name."),
                              "503": _error("The store is unreachable: retry later.", "Retry-After"),
                              **_AUTH_ERRORS},
            },
        },
        **_review_paths(),
        "/api/v1/status": {"get": {
            "operationId": "getStatus",
            "summary": "Links, queue depths and rates (any account may read it)",
            "responses": {"200": _json(_ref("GatewayStatus"), "The gateway's state."),
                          "401": {"$ref": "#/components/responses/Unauthorized"},
                          "429": {"$ref": "#/components/responses/TooManyRequests"},
                          "503": _error("No answer in time: retry later.", "Retry-After"),
                          "default": {"$ref": "#/components/responses/Error"}},
        }},
        "/api/v1/openapi.json": {"get": {
            "operationId": "getOpenapi",
            "summary": "This document (no API key needed)",
            "security": [],
            "responses": {"200": _json({"type": "object"}, "The OpenAPI 3.1 document."),
                          "default": {"$ref": "#/components/responses/Error"}},
        }},
    }


_REVIEW_ERRORS = {
    "403": _error("The account lacks the review permission (or may not use REST, or act as that reviewer)."),
    "503": _error("The store is unreachable or no answer in time: retry later.", "Retry-After"),
    "401": {"$ref": "#/components/responses/Unauthorized"},
    "429": {"$ref": "#/components/responses/TooManyRequests"},
    "default": {"$ref": "#/components/responses/Error"},
}


def _filter_params() -> list[dict[str, Any]]:
    return [{"name": name, "in": "query", "required": False, "schema": {"type": "string"},
             "description": schema["description"]}
            for name, schema in _review_schemas()["ReviewFilter"]["properties"].items()]


def _review_paths() -> dict[str, Any]:
    action = {"requestBody": {"required": True, "content": {"application/json": {"schema": _ref("ReviewAction")}}},
              "parameters": [{"name": "X-Smsgw-Reviewer", "in": "header", "required": False,
                              "schema": {"type": "string"}, "description": "The reviewer acting, if the body "
                                                                           "does not name one."}]}
    action_responses = {
        "200": _json(_ref("ReviewResult"), "Done: what changed (nothing, if nothing matched still waiting)."),
        "400": _error("Malformed JSON, or reviewer_required / unknown_reviewer: who acts is not clear."),
        "415": _error("Content-Type is not application/json."),
        "422": _error("Not a valid request: details lists every problem."),
        **_REVIEW_ERRORS,
    }
    cancel = {"requestBody": {"required": False, "content": {"application/json": {"schema": _ref("CancelBody")}}},
              "responses": {"200": _json(_ref("CancelResult"), "What was cancelled (recipients that went out "
                                                               "before go on)."),
                            "404": _error("Nothing of this account's by that id or name."),
                            "409": _error("nothing_to_cancel: everything has gone out or is final already."),
                            "422": _error("A bad body."), **_REVIEW_ERRORS}}
    binary = {"schema": {"type": "string", "format": "binary"}}
    return {
        "/api/v1/messages/{id}/cancel": {"post": {
            "operationId": "cancelMessage", "summary": "Cancel one of your messages before it goes out",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            **cancel}},
        "/api/v1/batches/{batch}/cancel": {"post": {
            "operationId": "cancelBatch", "summary": "Cancel what is left of one of your batches",
            "parameters": [{"name": "batch", "in": "path", "required": True, "schema": {"type": "string"},
                            "description": "As stored (the send answer's batch), percent-encoded."}],
            **cancel}},
        "/api/v1/review": {"get": {
            "operationId": "listReview", "summary": "The review queue: messages by any combination of filters "
                                                    "(needs the review permission)",
            "parameters": [*_filter_params(),
                           {"name": "offset", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 0, "default": 0}},
                           {"name": "limit", "in": "query", "required": False,
                            "schema": {"type": "integer", "minimum": 1, "maximum": REVIEW_LIMIT_MAX,
                                       "default": REVIEW_LIMIT_DEFAULT}}],
            "responses": {"200": _json(_ref("ReviewPage"), "A page, oldest first."),
                          "400": _error("A bad query parameter: the message names it."), **_REVIEW_ERRORS}}},
        "/api/v1/review/export": {"get": {
            "operationId": "exportReview",
            "summary": f"Every message the filters select as a file (at most {EXPORT_MAX_ROWS})",
            "parameters": [*_filter_params(),
                           {"name": "format", "in": "query", "required": False,
                            "schema": {"type": "string", "enum": ["xlsx", "csv"], "default": "xlsx"}}],
            "responses": {"200": {"description": "The file (Content-Disposition names it).",
                                  "headers": {name: {"$ref": f"#/components/headers/{name}"}
                                              for name in ("Content-Disposition", "X-Smsgw-Rows")},
                                  "content": {ctype.split(";")[0]: binary for ctype in CONTENT_TYPES.values()}},
                          "400": _error("A bad query parameter, or export_too_large."), **_REVIEW_ERRORS}}},
        "/api/v1/review/approve": {"post": {
            "operationId": "approveReview", "summary": "Approve held messages: they go out (at their send time)",
            **action, "responses": action_responses}},
        "/api/v1/review/reject": {"post": {
            "operationId": "rejectReview", "summary": "Reject held messages with a comment: final state rejected",
            **action, "responses": action_responses}},
        "/api/v1/review/{id}": {"get": {
            "operationId": "getReviewMessage", "summary": "One message as the review queue shows it, every "
                                                          "number included",
            "parameters": [{"name": "id", "in": "path", "required": True, "schema": {"type": "string"}}],
            "responses": {"200": _json(_ref("ReviewMessage"), "The message."),
                          "404": _error("No such message."), **_REVIEW_ERRORS}}},
    }


def build_openapi(*, max_batch: int, max_body_bytes: int) -> dict[str, Any]:
    """The OpenAPI 3.1 document for an API built with these limits."""
    return {
        "openapi": "3.1.0",
        "info": {"title": "smsgw REST API", "version": "1.0.0",
                 "description": "Send SMS through the gateway, follow their delivery, read uplink messages, "
                                "cancel what has not gone out, and work the review queue. "
                                "Every error is {\"error\": {\"code\", \"message\", \"details\"}}."},
        "security": [{"bearer": []}, {"apiKey": []}, {"basic": []}],
        "paths": _paths(max_body_bytes),
        "components": {
            "schemas": _schemas(max_batch),
            "securitySchemes": {
                "bearer": {"type": "http", "scheme": "bearer",
                           "description": "Authorization: Bearer <API key>, or Bearer <name>:<secret>"},
                "basic": {"type": "http", "scheme": "basic",
                          "description": "An account's name and secret (its secret_hash), e.g. curl -u name:secret"},
                "apiKey": {"type": "apiKey", "in": "header", "name": "X-API-Key"},
            },
            "headers": {
                "Retry-After": {"description": "Seconds to wait before retrying.",
                                "schema": {"type": "integer"}},
                "WWW-Authenticate": {"description": 'Bearer realm="smsgw"', "schema": {"type": "string"}},
                "Allow": {"description": "The methods the path supports.", "schema": {"type": "string"}},
                "Content-Disposition": {"description": 'attachment; filename="review-20240305-080000.xlsx"',
                                        "schema": {"type": "string"}},
                "X-Smsgw-Rows": {"description": "Messages in the export.", "schema": {"type": "integer"}},
            },
            "responses": {
                "Unauthorized": _error("No API key, or not a known one.", "WWW-Authenticate"),
                "Forbidden": _error("The account may not use the REST interface."),
                "TooManyRequests": _error("too_many_requests: too many failed logins from your address; "
                                          "rate_limited / quota_exceeded: the account's rate limit or daily quota "
                                          "(the message says which and when it resets). Retry after Retry-After "
                                          "seconds.", "Retry-After"),
                "Error": _error("Any other error (404 unknown path, 405 with Allow, 500 with an incident id "
                                "to quote to the operator)."),
            },
        },
    }
