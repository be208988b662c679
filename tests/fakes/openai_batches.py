"""The fake OpenAI's Files, Uploads and Batch API: uploaded files kept in memory (an Upload
gathers parts of at most 64 MB and becomes a File when completed with the right byte
count), batches whose
status advances one step each time they are read (validating → in_progress, half the
requests answered → all answered → finalizing → completed), output and error files in the
API's line format, expiry and cancellation, and the API's validation errors.

Each request of a batch is answered like a synchronous call to the fake: ``Echo: <prompt>``
(or the fake's ``default_reply``), input tokens ``ceil(chars / 4)`` of the instructions and
messages, output tokens ``ceil(len(answer) / 4)``."""

from __future__ import annotations

import asyncio
import json
import math
import secrets
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

BATCH_ENDPOINTS = ("/v1/responses", "/v1/chat/completions", "/v1/embeddings", "/v1/completions")
FILE_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_BATCH_REQUESTS = 50_000
MAX_PART_BYTES = 64 * 1024 * 1024
MAX_UPLOAD_BYTES = 8 * 1024 * 1024 * 1024
UPLOAD_SECONDS = 3600

Answer = Callable[[str], str]
InputChars = Callable[[str, dict[str, object]], int]


def new_id(prefix: str) -> str:
    return prefix + secrets.token_hex(12)


def error_response(
    status: int, message: str, param: str | None = None, code: str | None = None
) -> web.Response:
    body = {
        "error": {"message": message, "type": "invalid_request_error", "param": param, "code": code}
    }
    return web.json_response(body, status=status)


@dataclass
class StoredFile:
    """An uploaded (or generated) file."""

    id: str
    filename: str
    purpose: str
    data: bytes
    created_at: int = field(default_factory=lambda: int(time.time()))

    def object(self) -> dict[str, Any]:
        """The API's file object."""
        return {
            "id": self.id,
            "object": "file",
            "bytes": len(self.data),
            "created_at": self.created_at,
            "filename": self.filename,
            "purpose": self.purpose,
            "status": "processed",
            "expires_at": None,
            "status_details": None,
        }


@dataclass
class FakeUpload:
    """An Upload: its declared size and the parts added so far."""

    id: str
    filename: str
    purpose: str
    mime_type: str
    bytes: int
    parts: dict[str, bytes] = field(default_factory=dict)
    status: str = "pending"
    file_id: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))


@dataclass
class FakeBatch:
    """One batch and what has happened to it."""

    id: str
    endpoint: str
    input_file_id: str
    metadata: dict[str, str] | None
    status: str = "validating"
    requests: list[dict[str, Any]] = field(default_factory=list)
    done: int = 0
    output_lines: list[str] = field(default_factory=list)
    error_lines: list[str] = field(default_factory=list)
    errors: list[dict[str, Any]] = field(default_factory=list)
    failed: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    output_file_id: str | None = None
    error_file_id: str | None = None
    created_at: int = field(default_factory=lambda: int(time.time()))
    times: dict[str, int] = field(default_factory=dict)
    reads: int = 0


class FakeBatches:
    """The Files and Batches endpoints; tests steer outcomes through the attributes.
    ``parsed`` gives a request's multipart form and JSON body as the fake's middleware read
    them.

    Attributes:
        failing: prompts whose request fails (a 400 line in the error file).
        expire: when True, batches expire once half their requests are answered.
        corrupt_output: when True, a finished batch's output file is not JSON Lines.
        content_outage: file content reads (``GET /v1/files/{id}/content``) answered 500
            before they are served again (an outage while results are fetched).
        hold_upload: uploads (``POST /v1/files``) that store their file, then keep the
            answer until the client goes away (a process killed while uploading).
        hold_create: creations that make their batch, then keep the answer until the client
            goes away (a process killed while creating a batch).
        drop_create: creations that make their batch, then drop the connection unanswered
            (a network fault after the API took the request).
        files: every stored file by id; batches: every batch by id; uploads: every Upload.
        largest_part: the most bytes any one upload request carried.
    """

    def __init__(
        self,
        lock: threading.Lock,
        answer: Answer,
        input_chars: InputChars,
        parsed: Callable[[web.Request], tuple[Any, dict[str, object] | None]],
    ) -> None:
        self._lock = lock
        self._parsed = parsed
        self._answer = answer
        self._input_chars = input_chars
        self.failing: set[str] = set()
        self.expire = False
        self.corrupt_output = False
        self.content_outage = 0
        self.hold_upload = 0
        self.hold_create = 0
        self.drop_create = 0
        self.files: dict[str, StoredFile] = {}
        self.batches: dict[str, FakeBatch] = {}
        self.uploads: dict[str, FakeUpload] = {}
        self.largest_part = 0

    def register(self, app: web.Application) -> None:
        """Add the routes (before the fake's catch-all)."""
        app.router.add_post("/v1/files", self._upload)
        app.router.add_get("/v1/files/{file_id}", self._file)
        app.router.add_get("/v1/files/{file_id}/content", self._content)
        app.router.add_post("/v1/uploads", self._create_upload)
        app.router.add_post("/v1/uploads/{upload_id}/parts", self._add_part)
        app.router.add_post("/v1/uploads/{upload_id}/complete", self._complete_upload)
        app.router.add_post("/v1/uploads/{upload_id}/cancel", self._cancel_upload)
        app.router.add_delete("/v1/files/{file_id}", self._delete)
        app.router.add_post("/v1/batches", self._create)
        app.router.add_get("/v1/batches", self._list)
        app.router.add_get("/v1/batches/{batch_id}", self._retrieve)
        app.router.add_post("/v1/batches/{batch_id}/cancel", self._cancel)

    def reset(self) -> None:
        """Forget every file and batch and the steering."""
        with self._lock:
            self.failing.clear()
            self.expire = False
            self.corrupt_output = False
            self.content_outage = 0
            self.hold_upload = 0
            self.hold_create = 0
            self.drop_create = 0
            self.files.clear()
            self.batches.clear()
            self.uploads.clear()
            self.largest_part = 0

    # --- files ---------------------------------------------------------------------------

    async def _upload(self, request: web.Request) -> web.Response:
        form, _ = self._parsed(request)
        if form is None:
            return error_response(400, "Invalid request: expected multipart/form-data.")
        purpose = form.text("purpose")
        if purpose is None:
            return error_response(
                400,
                "Missing required parameter: 'purpose'.",
                "purpose",
                "missing_required_parameter",
            )
        if purpose not in FILE_PURPOSES:
            return error_response(
                400,
                f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'",
                "purpose",
                "invalid_value",
            )
        files = form.file("file")
        if not files:
            return error_response(
                400, "Missing required parameter: 'file'.", "file", "missing_required_parameter"
            )
        upload = files[0]
        filename = upload.filename or "file"
        if purpose == "batch" and not filename.endswith(".jsonl"):
            return error_response(400, "Invalid file format for Batch API. Must be .jsonl", "file")
        stored = StoredFile(new_id("file-"), filename, purpose, upload.data)
        with self._lock:
            self.files[stored.id] = stored
            self.largest_part = max(self.largest_part, len(upload.data))
            hold, self.hold_upload = self.hold_upload > 0, max(self.hold_upload - 1, 0)
        if hold:
            await _until_gone(request)
        return web.json_response(stored.object())

    # --- uploads (a file in parts) -------------------------------------------------------

    async def _create_upload(self, request: web.Request) -> web.Response:
        _, body = self._parsed(request)
        if body is None:
            return error_response(400, "We could not parse the JSON body of your request.")
        for required in ("bytes", "filename", "mime_type", "purpose"):
            if required not in body:
                return error_response(
                    400,
                    f"Missing required parameter: '{required}'.",
                    required,
                    "missing_required_parameter",
                )
        purpose, size = str(body["purpose"]), body["bytes"]
        if purpose not in FILE_PURPOSES:
            return error_response(
                400,
                f"'{purpose}' is not one of {list(FILE_PURPOSES)} - 'purpose'",
                "purpose",
                "invalid_value",
            )
        if not isinstance(size, int) or size < 0 or size > MAX_UPLOAD_BYTES:
            return error_response(400, f"Invalid 'bytes': at most {MAX_UPLOAD_BYTES}.", "bytes")
        if purpose == "batch" and (
            not str(body["filename"]).endswith(".jsonl")
            or body["mime_type"] not in ("application/jsonl", "text/jsonl")
        ):
            return error_response(
                400, "Invalid file format for Batch API. Must be .jsonl", "mime_type"
            )
        upload = FakeUpload(
            new_id("upload_"), str(body["filename"]), purpose, str(body["mime_type"]), size
        )
        with self._lock:
            self.uploads[upload.id] = upload
            return web.json_response(self._upload_object(upload))

    def _open_upload(self, upload_id: str) -> FakeUpload | web.Response:
        upload = self.uploads.get(upload_id)
        if upload is None:
            return error_response(404, f"No such Upload object: {upload_id}", "upload_id")
        if upload.status != "pending":
            return error_response(
                400, f"Upload {upload_id} is already {upload.status}.", "upload_id"
            )
        if time.time() > upload.created_at + UPLOAD_SECONDS:
            upload.status = "expired"
            return error_response(400, f"Upload {upload_id} has expired.", "upload_id")
        return upload

    async def _add_part(self, request: web.Request) -> web.Response:
        form, _ = self._parsed(request)
        parts = form.file("data") if form is not None else []
        if not parts:
            return error_response(
                400, "Missing required parameter: 'data'.", "data", "missing_required_parameter"
            )
        data = parts[0].data
        if len(data) > MAX_PART_BYTES:
            return error_response(400, f"A part may be at most {MAX_PART_BYTES} bytes.", "data")
        with self._lock:
            upload = self._open_upload(request.match_info["upload_id"])
            if isinstance(upload, web.Response):
                return upload
            part_id = new_id("part_")
            upload.parts[part_id] = data
            self.largest_part = max(self.largest_part, len(data))
            return web.json_response(
                {
                    "id": part_id,
                    "object": "upload.part",
                    "created_at": int(time.time()),
                    "upload_id": upload.id,
                }
            )

    async def _complete_upload(self, request: web.Request) -> web.Response:
        _, body = self._parsed(request)
        part_ids = (body or {}).get("part_ids")
        if not isinstance(part_ids, list):
            return error_response(
                400,
                "Missing required parameter: 'part_ids'.",
                "part_ids",
                "missing_required_parameter",
            )
        with self._lock:
            upload = self._open_upload(request.match_info["upload_id"])
            if isinstance(upload, web.Response):
                return upload
            unknown = [part for part in part_ids if part not in upload.parts]
            if unknown:
                return error_response(400, f"No such part: {unknown[0]}", "part_ids")
            data = b"".join(upload.parts[part] for part in part_ids)
            if len(data) != upload.bytes:
                return error_response(
                    400,
                    f"The upload has {len(data)} bytes in the given parts, but {upload.bytes} "
                    "were declared when it was created.",
                    "part_ids",
                )
            stored = StoredFile(new_id("file-"), upload.filename, upload.purpose, data)
            self.files[stored.id] = stored
            upload.status = "completed"
            upload.file_id = stored.id
            return web.json_response(self._upload_object(upload))

    async def _cancel_upload(self, request: web.Request) -> web.Response:
        with self._lock:
            upload = self._open_upload(request.match_info["upload_id"])
            if isinstance(upload, web.Response):
                return upload
            upload.status = "cancelled"
            return web.json_response(self._upload_object(upload))

    def _upload_object(self, upload: FakeUpload) -> dict[str, Any]:
        stored = self.files.get(upload.file_id) if upload.file_id else None
        return {
            "id": upload.id,
            "object": "upload",
            "bytes": upload.bytes,
            "created_at": upload.created_at,
            "expires_at": upload.created_at + UPLOAD_SECONDS,
            "filename": upload.filename,
            "purpose": upload.purpose,
            "status": upload.status,
            "file": stored.object() if stored is not None else None,
        }

    def _stored(self, file_id: str) -> StoredFile | None:
        with self._lock:
            return self.files.get(file_id)

    async def _file(self, request: web.Request) -> web.Response:
        stored = self._stored(request.match_info["file_id"])
        if stored is None:
            return error_response(
                404, f"No such File object: {request.match_info['file_id']}", "id"
            )
        return web.json_response(stored.object())

    async def _content(self, request: web.Request) -> web.Response:
        with self._lock:
            outage, self.content_outage = self.content_outage > 0, max(self.content_outage - 1, 0)
        if outage:
            body = {
                "error": {
                    "message": "The server had an error while processing your request.",
                    "type": "server_error",
                    "param": None,
                    "code": None,
                }
            }
            return web.json_response(body, status=500)
        stored = self._stored(request.match_info["file_id"])
        if stored is None:
            return error_response(
                404, f"No such File object: {request.match_info['file_id']}", "id"
            )
        return web.Response(body=stored.data, content_type="application/octet-stream")

    async def _delete(self, request: web.Request) -> web.Response:
        file_id = request.match_info["file_id"]
        with self._lock:
            stored = self.files.pop(file_id, None)
        if stored is None:
            return error_response(404, f"No such File object: {file_id}", "id")
        return web.json_response({"id": file_id, "object": "file", "deleted": True})

    # --- batches -------------------------------------------------------------------------

    async def _create(self, request: web.Request) -> web.Response:
        _, body = self._parsed(request)
        if body is None:
            return error_response(400, "We could not parse the JSON body of your request.")
        for required in ("input_file_id", "endpoint", "completion_window"):
            if required not in body:
                return error_response(
                    400,
                    f"Missing required parameter: '{required}'.",
                    required,
                    "missing_required_parameter",
                )
        if body["completion_window"] != "24h":
            return error_response(
                400,
                f"Invalid value: '{body['completion_window']}'. Supported values are: '24h'.",
                "completion_window",
                "invalid_value",
            )
        if body["endpoint"] not in BATCH_ENDPOINTS:
            return error_response(
                400,
                f"Invalid value: '{body['endpoint']}'. Supported values are: "
                + ", ".join(f"'{e}'" for e in BATCH_ENDPOINTS)
                + ".",
                "endpoint",
                "invalid_value",
            )
        stored = self._stored(str(body["input_file_id"]))
        if stored is None:
            return error_response(
                400, f"Could not find file {body['input_file_id']}.", "input_file_id"
            )
        if stored.purpose != "batch":
            return error_response(
                400, "The input file must be uploaded with purpose 'batch'.", "input_file_id"
            )
        metadata = body.get("metadata")
        batch = FakeBatch(
            new_id("batch_"),
            str(body["endpoint"]),
            stored.id,
            metadata if isinstance(metadata, dict) else None,
        )
        with self._lock:
            self.batches[batch.id] = batch
            hold, self.hold_create = self.hold_create > 0, max(self.hold_create - 1, 0)
            drop, self.drop_create = self.drop_create > 0, max(self.drop_create - 1, 0)
        if drop and request.transport is not None:
            request.transport.abort()
        if hold:
            await _until_gone(request)
        return web.json_response(self._object(batch))

    async def _list(self, request: web.Request) -> web.Response:
        """Newest first, ``limit`` (1-100, 20 by default) a page, after the ``after`` id."""
        try:
            limit = int(request.query.get("limit", "20"))
        except ValueError:
            return error_response(400, "Invalid 'limit': an integer is expected.", "limit")
        if not 1 <= limit <= 100:
            return error_response(400, "Invalid 'limit': it must be between 1 and 100.", "limit")
        with self._lock:
            newest = list(reversed(self.batches.values()))
            after = request.query.get("after")
            if after is not None:
                ids = [batch.id for batch in newest]
                if after not in ids:
                    return error_response(400, f"No batch found with id '{after}'.", "after")
                newest = newest[ids.index(after) + 1 :]
            page = [self._object(batch) for batch in newest[:limit]]
            return web.json_response(
                {
                    "object": "list",
                    "data": page,
                    "first_id": page[0]["id"] if page else None,
                    "last_id": page[-1]["id"] if page else None,
                    "has_more": len(newest) > limit,
                }
            )

    async def _retrieve(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(request.match_info["batch_id"])
            if batch is None:
                return error_response(
                    404, f"No batch found with id '{request.match_info['batch_id']}'.", "batch_id"
                )
            self._advance(batch)
            return web.json_response(self._object(batch))

    async def _cancel(self, request: web.Request) -> web.Response:
        with self._lock:
            batch = self.batches.get(request.match_info["batch_id"])
            if batch is None:
                return error_response(
                    404, f"No batch found with id '{request.match_info['batch_id']}'.", "batch_id"
                )
            if batch.status not in ("validating", "in_progress", "finalizing"):
                return error_response(
                    409,
                    f"Cannot cancel a batch with status '{batch.status}'.",
                    None,
                    "batch_not_cancellable",
                )
            batch.status = "cancelling"
            batch.times["cancelling_at"] = int(time.time())
            return web.json_response(self._object(batch))

    # --- the batch's life (called with the lock held) ------------------------------------

    def _advance(self, batch: FakeBatch) -> None:
        """One step per read."""
        if batch.status == "validating":
            problems = self._validate(batch)
            if problems:
                batch.status = "failed"
                batch.errors = problems
                batch.times["failed_at"] = int(time.time())
            else:
                batch.status = "in_progress"
                batch.times["in_progress_at"] = int(time.time())
        elif batch.status == "in_progress":
            half = math.ceil(len(batch.requests) / 2)
            if batch.done < half:
                self._run(batch, half)
            elif self.expire:
                self._close(
                    batch,
                    "expired",
                    "batch_expired",
                    "This request could not be executed before the completion window expired.",
                )
            else:
                self._run(batch, len(batch.requests))
                batch.status = "finalizing"
                batch.times["finalizing_at"] = int(time.time())
        elif batch.status == "finalizing":
            self._close(batch, "completed", "", "")
        elif batch.status == "cancelling":
            self._close(batch, "cancelled", "batch_cancelled", "This request was cancelled.")

    def _validate(self, batch: FakeBatch) -> list[dict[str, Any]]:
        problems: list[dict[str, Any]] = []
        seen: set[str] = set()
        models: set[str] = set()
        lines = self.files[batch.input_file_id].data.decode("utf-8", "replace").split("\n")
        if lines and lines[-1] == "":
            lines.pop()
        for number, line in enumerate(lines, start=1):
            try:
                item = json.loads(line)
            except ValueError:
                problems.append(
                    _line_error(
                        "invalid_json_line", number, "This line is not parseable as valid JSON."
                    )
                )
                continue
            if not isinstance(item, dict):
                problems.append(
                    _line_error("invalid_request", number, "Each line must be a JSON object.")
                )
                continue
            custom_id = item.get("custom_id")
            if not isinstance(custom_id, str) or not custom_id:
                problems.append(
                    _line_error(
                        "missing_required_parameter",
                        number,
                        "Missing required parameter: 'custom_id'.",
                    )
                )
                continue
            if custom_id in seen:
                problems.append(
                    _line_error(
                        "duplicate_custom_id",
                        number,
                        f"The custom_id '{custom_id}' is used more than once.",
                    )
                )
            seen.add(custom_id)
            if item.get("method") != "POST":
                problems.append(_line_error("invalid_value", number, "The method must be 'POST'."))
            if item.get("url") != batch.endpoint:
                problems.append(
                    _line_error(
                        "mismatched_endpoint",
                        number,
                        f"The url '{item.get('url')}' does not match the batch endpoint "
                        f"'{batch.endpoint}'.",
                    )
                )
            body = item.get("body")
            if not isinstance(body, dict) or not isinstance(body.get("model"), str):
                problems.append(
                    _line_error(
                        "missing_required_parameter",
                        number,
                        "Missing required parameter: 'body.model'.",
                    )
                )
                continue
            models.add(body["model"])
            batch.requests.append(item)
        if len(models) > 1:
            problems.append(
                _line_error(
                    "mismatched_model", None, "All requests in a batch must use the same model."
                )
            )
        if len(lines) > MAX_BATCH_REQUESTS:
            problems.append(
                _line_error(
                    "too_many_requests",
                    None,
                    f"A batch may have at most {MAX_BATCH_REQUESTS} requests.",
                )
            )
        if not lines:
            problems.append(_line_error("empty_file", None, "The input file is empty."))
        return problems

    def _run(self, batch: FakeBatch, until: int) -> None:
        api = "responses" if batch.endpoint == "/v1/responses" else "chat"
        while batch.done < until:
            item = batch.requests[batch.done]
            batch.done += 1
            body = item["body"]
            prompt = body["input"] if api == "responses" else body["messages"][-1]["content"]
            request_id = new_id("req_")
            if prompt in self.failing:
                batch.failed += 1
                error = {
                    "message": "The prompt was refused.",
                    "type": "invalid_request_error",
                    "param": None,
                    "code": None,
                }
                batch.error_lines.append(
                    json.dumps(
                        {
                            "id": new_id("batch_req_"),
                            "custom_id": item["custom_id"],
                            "response": {
                                "status_code": 400,
                                "request_id": request_id,
                                "body": {"error": error},
                            },
                            "error": None,
                        }
                    )
                )
                continue
            text = self._answer(prompt)
            input_tokens = math.ceil(self._input_chars(api, body) / 4)
            output_tokens = math.ceil(len(text) / 4)
            batch.input_tokens += input_tokens
            batch.output_tokens += output_tokens
            batch.output_lines.append(
                json.dumps(
                    {
                        "id": new_id("batch_req_"),
                        "custom_id": item["custom_id"],
                        "response": {
                            "status_code": 200,
                            "request_id": request_id,
                            "body": _response_body(
                                api, body["model"], text, input_tokens, output_tokens
                            ),
                        },
                        "error": None,
                    }
                )
            )

    def _close(self, batch: FakeBatch, status: str, code: str, message: str) -> None:
        """Final: the un-run requests go to the error file with ``code``."""
        for item in batch.requests[batch.done :]:
            batch.error_lines.append(
                json.dumps(
                    {
                        "id": new_id("batch_req_"),
                        "custom_id": item["custom_id"],
                        "response": None,
                        "error": {"code": code, "message": message},
                    }
                )
            )
        batch.status = status
        batch.times[f"{status}_at"] = int(time.time())
        for lines, attribute, name in (
            (batch.output_lines, "output_file_id", "batch_output.jsonl"),
            (batch.error_lines, "error_file_id", "batch_errors.jsonl"),
        ):
            if lines:
                content = ("\n".join(lines) + "\n").encode()
                if attribute == "output_file_id" and self.corrupt_output:
                    content = b"{this is not json\n"
                stored = StoredFile(new_id("file-"), name, "batch_output", content)
                self.files[stored.id] = stored
                setattr(batch, attribute, stored.id)

    def _object(self, batch: FakeBatch) -> dict[str, Any]:
        total = len(batch.requests)
        completed = len(batch.output_lines)
        return {
            "id": batch.id,
            "object": "batch",
            "endpoint": batch.endpoint,
            "errors": {"object": "list", "data": batch.errors} if batch.errors else None,
            "input_file_id": batch.input_file_id,
            "completion_window": "24h",
            "status": batch.status,
            "output_file_id": batch.output_file_id,
            "error_file_id": batch.error_file_id,
            "created_at": batch.created_at,
            "expires_at": batch.created_at + 86_400,
            **{
                key: batch.times.get(key)
                for key in (
                    "in_progress_at",
                    "finalizing_at",
                    "completed_at",
                    "failed_at",
                    "expired_at",
                    "cancelling_at",
                    "cancelled_at",
                )
            },
            "request_counts": {"total": total, "completed": completed, "failed": batch.failed},
            "usage": {
                "input_tokens": batch.input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": batch.output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": batch.input_tokens + batch.output_tokens,
            },
            "metadata": batch.metadata,
        }


async def _until_gone(request: web.Request) -> None:
    """Wait until the client closes the connection (or died)."""
    while True:
        if request.transport is None or request.transport.is_closing():
            return
        await asyncio.sleep(0.05)


def _line_error(code: str, line: int | None, message: str) -> dict[str, Any]:
    return {"code": code, "line": line, "message": message, "param": None}


def _response_body(
    api: str, model: str, text: str, input_tokens: int, output_tokens: int
) -> dict[str, Any]:
    if api == "responses":
        return {
            "id": new_id("resp_"),
            "object": "response",
            "status": "completed",
            "model": model,
            "output": [
                {
                    "type": "message",
                    "id": new_id("msg_"),
                    "role": "assistant",
                    "status": "completed",
                    "content": [{"type": "output_text", "text": text, "annotations": []}],
                }
            ],
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": 0},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
        }
    return {
        "id": new_id("chatcmpl-"),
        "object": "chat.completion",
        "model": model,
        "choices": [
            {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": "stop"}
        ],
        "usage": {
            "prompt_tokens": input_tokens,
            "completion_tokens": output_tokens,
            "total_tokens": input_tokens + output_tokens,
        },
    }
