#!/usr/bin/env python3
"""Check chat messages that the Rust code produced against what Slack and Mattermost accept.

Usage: check_chat_messages.py DIR

DIR holds ``*.json`` files, one chat message each; the file name (without ``.json``) is its label.

* A file whose name starts with ``mattermost-`` is a Mattermost slash-command answer or a
  follow-up posted to its response_url. It may only use the response parameters Mattermost
  documents (https://developers.mattermost.com/integrate/slash-commands/custom/#response-parameters),
  ``response_type`` must be ``ephemeral`` or ``in_channel`` (the FAQ on
  https://developers.mattermost.com/integrate/slash-commands/ says Mattermost assumes no default),
  and ``text`` must be non-empty and at most 16383 characters ("Posts size is limited to 16383
  characters", same page).
* Any other file is a Slack message: a slash-command response or response_url post
  (``response_type`` / ``replace_original`` / ``delete_original``), or a chat.postMessage /
  chat.postEphemeral body (it has ``channel``). Every block is parsed with Slack's own SDK
  (``slack_sdk.models.blocks.Block.parse``), ``validate_json()`` must pass on the block and on
  every object nested in it, and the parsed block's ``to_dict()`` must equal the block we sent:
  slack_sdk silently drops keys it does not know, so any difference is a key or value Slack does
  not know. ``text`` (the notification fallback) is required and at most 40000 characters, at
  most 50 blocks, block_ids unique.

Prints one line per file, then ``chat messages: N checked, M failed``. Exits 1 if any file
failed, or if no file was checked at all (a run that checks nothing must not pass).
"""

from __future__ import annotations

import copy
import json
import logging
import sys
from pathlib import Path
from typing import Any

try:
    from slack_sdk.errors import SlackObjectFormationError
    from slack_sdk.models.basic_objects import JsonObject
    from slack_sdk.models.blocks import Block
except ImportError:  # pragma: no cover - environment problem, not a message problem
    print("check_chat_messages: slack_sdk is not installed (pip install -r dev/requirements.txt)", file=sys.stderr)
    sys.exit(1)

# slack_sdk logs a warning for each unknown block/element type; the round-trip check below
# reports those as failures with a path, so keep its own log quiet.
logging.getLogger("slack_sdk").setLevel(logging.ERROR)

# --- Slack ------------------------------------------------------------------------------------

# https://docs.slack.dev/interactivity/handling-user-interaction (response_url / slash command
# response: a message payload plus response_type, replace_original, delete_original).
SLACK_RESPONSE_KEYS = {
    "text", "blocks", "attachments", "thread_ts", "mrkdwn",
    "response_type", "replace_original", "delete_original",
}
# https://docs.slack.dev/reference/methods/chat.postMessage (arguments other than token).
SLACK_POST_MESSAGE_KEYS = {
    "channel", "text", "blocks", "attachments", "as_user", "icon_emoji", "icon_url", "link_names",
    "markdown_text", "metadata", "mrkdwn", "parse", "reply_broadcast", "thread_ts", "unfurl_links",
    "unfurl_media", "username",
}
# https://docs.slack.dev/reference/methods/chat.postEphemeral (arguments other than token).
SLACK_POST_EPHEMERAL_KEYS = {
    "channel", "user", "text", "blocks", "attachments", "as_user", "icon_emoji", "icon_url",
    "link_names", "markdown_text", "parse", "thread_ts", "username",
}
SLACK_RESPONSE_TYPES = {"ephemeral", "in_channel"}
SLACK_MAX_BLOCKS = 50  # "You can include up to 50 blocks in each message"
SLACK_MAX_TEXT = 40000  # chat.postMessage: text is truncated past 40,000 characters


def _describe(value: Any) -> str:
    text = json.dumps(value, ensure_ascii=False)
    return text if len(text) <= 60 else text[:57] + "..."


def first_difference(sent: Any, parsed: Any, path: str) -> str | None:
    """Where ``parsed`` (slack_sdk's to_dict()) differs from ``sent``, or None if equal."""
    if isinstance(sent, dict) and parsed is None:
        return f"{path}: slack_sdk does not know type {_describe(sent.get('type'))} (dropped on parse)"
    if isinstance(sent, dict) and isinstance(parsed, dict):
        for key in sent:
            if key not in parsed:
                return f"{path}.{key}: not known to slack_sdk (dropped on parse)"
        for key in parsed:
            if key not in sent:
                return f"{path}.{key}: added by slack_sdk ({_describe(parsed[key])})"
        for key in sent:
            diff = first_difference(sent[key], parsed[key], f"{path}.{key}")
            if diff:
                return diff
        return None
    if isinstance(sent, list) and isinstance(parsed, list):
        if len(sent) != len(parsed):
            return f"{path}: {len(sent)} items sent, {len(parsed)} after parse (unknown item type?)"
        for i, (a, b) in enumerate(zip(sent, parsed)):
            diff = first_difference(a, b, f"{path}[{i}]")
            if diff:
                return diff
        return None
    # type() check: JSON true must not round-trip to 1, nor "1" to 1.
    if type(sent) is not type(parsed) or sent != parsed:
        return f"{path}: sent {_describe(sent)}, slack_sdk has {_describe(parsed)}"
    return None


def _each_validator_error(obj: JsonObject) -> list[str]:
    """Every failing @JsonValidator of obj (validate_json() itself stops at the first)."""
    errors = []
    for name in sorted(dir(type(obj))):
        method = getattr(obj, name, None)
        if name.startswith("__") or not callable(method) or not hasattr(method, "validator"):
            continue
        try:
            method()
        except SlackObjectFormationError as e:
            errors.append(str(e))
    return errors


def validation_errors(obj: Any, path: str) -> list[str]:
    """validate_json() on obj and on every JsonObject nested in it, with all of each one's errors."""
    errors: list[str] = []
    if isinstance(obj, (list, tuple)):
        for i, item in enumerate(obj):
            errors += validation_errors(item, f"{path}[{i}]")
    elif isinstance(obj, JsonObject):
        try:
            obj.validate_json()
        except SlackObjectFormationError as e:
            errors += [f"{path}: {msg}" for msg in (_each_validator_error(obj) or [str(e)])]
        for name in sorted(obj.attributes):
            value = getattr(obj, name, None)
            if isinstance(value, (JsonObject, list, tuple)):
                errors += validation_errors(value, f"{path}.{name}")
    return errors


# Block Kit fields that Slack types as booleans; slack_sdk keeps whatever it is given there.
SLACK_BOOLEAN_FIELDS = {"emoji", "verbatim", "dispatch_action", "optional", "focus_on_load", "multiline"}


def non_boolean_flags(value: Any, path: str) -> list[str]:
    errors: list[str] = []
    if isinstance(value, dict):
        for key, item in value.items():
            if key in SLACK_BOOLEAN_FIELDS and not isinstance(item, bool):
                errors.append(f"{path}.{key} must be a JSON boolean, got {_describe(item)}")
            errors += non_boolean_flags(item, f"{path}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            errors += non_boolean_flags(item, f"{path}[{i}]")
    return errors


def check_slack_block(block: Any, path: str) -> list[str]:
    if not isinstance(block, dict):
        return [f"{path}: a block must be an object, got {_describe(block)}"]
    if "type" not in block:
        return [f"{path}: block has no type"]
    try:
        parsed = Block.parse(copy.deepcopy(block))
    except Exception as e:  # constructors raise TypeError/ValueError on malformed input
        return [f"{path}: slack_sdk cannot parse it: {type(e).__name__}: {e}"]
    if parsed is None:
        return [f"{path}: unknown block type {_describe(block['type'])}"]
    errors = validation_errors(parsed, path) + non_boolean_flags(block, path)
    if errors:
        return errors
    try:
        round_trip = parsed.to_dict()
    except Exception as e:
        return [f"{path}: to_dict() failed: {type(e).__name__}: {e}"]
    diff = first_difference(block, round_trip, path)
    return [diff] if diff else []


def check_slack(msg: dict) -> list[str]:
    errors: list[str] = []
    if "channel" in msg:
        allowed = SLACK_POST_EPHEMERAL_KEYS if "user" in msg else SLACK_POST_MESSAGE_KEYS
        kind = "chat.postEphemeral" if "user" in msg else "chat.postMessage"
    else:
        allowed, kind = SLACK_RESPONSE_KEYS, "a response_url / slash-command response"
    unknown = sorted(set(msg) - allowed)
    if unknown:
        errors.append(f"top-level key(s) {', '.join(unknown)} not accepted by {kind}")

    text = msg.get("text")
    if not isinstance(text, str) or not text.strip():
        errors.append("text (the notification fallback) is required and must be a non-blank string")
    elif len(text) > SLACK_MAX_TEXT:
        errors.append(f"text is {len(text)} characters (max {SLACK_MAX_TEXT})")

    if "response_type" in msg and msg["response_type"] not in SLACK_RESPONSE_TYPES:
        errors.append(f"response_type {_describe(msg['response_type'])} is not ephemeral or in_channel")
    for flag in ("replace_original", "delete_original"):
        if flag in msg and not isinstance(msg[flag], bool):
            errors.append(f"{flag} must be a JSON boolean, got {_describe(msg[flag])}")
    if "channel" in msg and (not isinstance(msg["channel"], str) or not msg["channel"]):
        errors.append("channel must be a non-empty string")

    if "blocks" in msg:
        blocks = msg["blocks"]
        if not isinstance(blocks, list):
            errors.append("blocks must be an array")
        elif not blocks:
            errors.append("blocks is empty (leave it out instead)")
        else:
            if len(blocks) > SLACK_MAX_BLOCKS:
                errors.append(f"{len(blocks)} blocks (max {SLACK_MAX_BLOCKS})")
            seen: dict[str, int] = {}
            for i, block in enumerate(blocks):
                errors += check_slack_block(block, f"blocks[{i}]")
                block_id = block.get("block_id") if isinstance(block, dict) else None
                if isinstance(block_id, str):
                    if block_id in seen:
                        errors.append(f"blocks[{i}].block_id {_describe(block_id)} repeats blocks[{seen[block_id]}]")
                    seen.setdefault(block_id, i)
    return errors


# --- Mattermost -------------------------------------------------------------------------------

# https://developers.mattermost.com/integrate/slash-commands/custom/#response-parameters
# (the same fields as the server's model.CommandResponse).
MATTERMOST_KEYS = {
    "text", "attachments", "response_type", "username", "channel_id", "icon_url", "goto_location",
    "type", "extra_responses", "skip_slack_parsing", "props",
}
MATTERMOST_EXTRA_RESPONSE_KEYS = MATTERMOST_KEYS - {"goto_location", "extra_responses"}
# "The following keys are reserved and ignored if supplied" (props, same page).
MATTERMOST_RESERVED_PROPS = {
    "from_webhook", "from_bot", "from_oauth_app", "from_plugin", "force_notification",
    "silent_notification", "override_username", "override_icon_url", "override_icon_emoji",
    "webhook_display_name", "card", "attachments",
}
MATTERMOST_MAX_TEXT = 16383  # "Posts size is limited to 16383 characters" (Mattermost Server v5.0+)
MATTERMOST_RESPONSE_TYPES = {"ephemeral", "in_channel"}


def check_mattermost(msg: dict, allowed: set[str] = MATTERMOST_KEYS, where: str = "") -> list[str]:
    errors: list[str] = []
    unknown = sorted(set(msg) - allowed)
    if unknown:
        errors.append(f"{where}key(s) {', '.join(unknown)} not a Mattermost slash-command response parameter")
    if msg.get("response_type") not in MATTERMOST_RESPONSE_TYPES:
        errors.append(f"{where}response_type must be ephemeral or in_channel, got {_describe(msg.get('response_type'))}")
    text = msg.get("text")
    if not isinstance(text, str) or not text.strip():
        errors.append(f"{where}text is required and must be a non-blank string")
    elif len(text) > MATTERMOST_MAX_TEXT:
        errors.append(f"{where}text is {len(text)} characters (max {MATTERMOST_MAX_TEXT})")
    for key in ("username", "channel_id", "icon_url", "goto_location", "type"):
        if key in msg and not isinstance(msg[key], str):
            errors.append(f"{where}{key} must be a string")
    if isinstance(msg.get("type"), str) and msg["type"] and not msg["type"].startswith("custom_"):
        errors.append(f"{where}type must be blank or begin with custom_")
    if "skip_slack_parsing" in msg and not isinstance(msg["skip_slack_parsing"], bool):
        errors.append(f"{where}skip_slack_parsing must be a JSON boolean")
    if "props" in msg:
        if not isinstance(msg["props"], dict):
            errors.append(f"{where}props must be an object")
        else:
            reserved = sorted(set(msg["props"]) & MATTERMOST_RESERVED_PROPS)
            if reserved:
                errors.append(f"{where}props key(s) {', '.join(reserved)} are reserved and ignored by Mattermost")
    if "attachments" in msg and not isinstance(msg["attachments"], list):
        errors.append(f"{where}attachments must be an array")
    if "extra_responses" in msg:
        extra = msg["extra_responses"]
        if not isinstance(extra, list):
            errors.append(f"{where}extra_responses must be an array")
        else:
            for i, item in enumerate(extra):
                if not isinstance(item, dict):
                    errors.append(f"{where}extra_responses[{i}] must be an object")
                else:
                    errors += check_mattermost(item, MATTERMOST_EXTRA_RESPONSE_KEYS, f"extra_responses[{i}]: ")
    return errors


# --- driver -----------------------------------------------------------------------------------


def check_file(path: Path) -> list[str]:
    try:
        msg = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        return [f"not readable JSON: {e}"]
    if not isinstance(msg, dict):
        return ["a chat message must be a JSON object"]
    if path.name.startswith("mattermost-"):
        return check_mattermost(msg)
    return check_slack(msg)


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[1] in ("-h", "--help"):
        print(__doc__.strip().splitlines()[2], file=sys.stderr)
        return 2
    directory = Path(argv[1])
    if not directory.is_dir():
        print(f"check_chat_messages: {directory} is not a directory", file=sys.stderr)
        return 2
    checked = failed = 0
    for path in sorted(directory.glob("*.json")):
        checked += 1
        errors = check_file(path)
        label = path.stem
        if errors:
            failed += 1
            print(f"FAIL {label}: {'; '.join(errors)}")
        else:
            print(f"OK   {label}")
    if checked == 0:
        print(f"FAIL no *.json chat messages in {directory}")
    print(f"chat messages: {checked} checked, {failed} failed")
    return 1 if failed or checked == 0 else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
