"""nginx sizes as numbers, and the proxy buffer combinations nginx refuses at `nginx -t`.

The rules below mirror `ngx_http_proxy_merge_loc_conf` (nginx's http/modules/ngx_http_proxy_module.c): it
checks a location's effective buffer settings after inheritance, filling the unset ones from defaults that
depend on the others. Checking the same rules here refuses such an object with its field named, so it never
reaches the nodes' `nginx -t`, where it would fail the whole pair's configuration.
"""

from __future__ import annotations

from dataclasses import dataclass

PAGE_SIZE = 4096
"""nginx's default proxy_buffer_size and proxy_buffers size is one memory page: 4k on the x86-64 and
most arm64 Linux kernels the nodes run."""
DEFAULT_BUFFER_COUNT = 8
DEFAULT_MAX_TEMP_FILE_SIZE = 1024 * 1024 * 1024
UNITS = {"": 1, "k": 1024, "m": 1024 * 1024}


def size_bytes(size: str) -> int:
    """An nginx size (`NginxSize`: digits with an optional k/K or m/M suffix) in bytes."""
    unit = size[-1].lower() if size[-1].isalpha() else ""
    return int(size.removesuffix(size[-1]) if unit else size) * UNITS[unit]


def show_size(size: int) -> str:
    """Bytes in nginx's notation, largest exact unit first (262144 → 256k)."""
    for suffix in ("m", "k"):
        if size and size % UNITS[suffix] == 0:
            return f"{size // UNITS[suffix]}{suffix}"
    return str(size)


@dataclass(frozen=True)
class ProxyBufferSizes:
    """A location's effective proxy buffer settings in bytes; None is unset (nginx's default applies)."""

    buffer_size: int | None = None
    buffers_number: int | None = None
    buffers_size: int | None = None
    busy_buffers_size: int | None = None
    temp_file_write_size: int | None = None
    max_temp_file_size: int | None = None


def refused_by_nginx(sizes: ProxyBufferSizes) -> tuple[str, str] | None:
    """(the field nginx names, why) for the first rule nginx would refuse these settings by, or None."""
    number = DEFAULT_BUFFER_COUNT if sizes.buffers_number is None else sizes.buffers_number
    one_buffer = PAGE_SIZE if sizes.buffers_size is None else sizes.buffers_size
    largest = max(PAGE_SIZE if sizes.buffer_size is None else sizes.buffer_size, one_buffer)
    described = f"the larger of bufferSize and buffers.size, {show_size(largest)}"
    busy, busy_note = _or_default(sizes.busy_buffers_size, 2 * largest)
    all_but_one = (number - 1) * one_buffer
    write, write_note = _or_default(sizes.temp_file_write_size, 2 * largest)
    max_temp = DEFAULT_MAX_TEMP_FILE_SIZE if sizes.max_temp_file_size is None else sizes.max_temp_file_size
    rules = (  # in nginx's order, each (refused, field, why)
        (sizes.buffer_size == 0, "bufferSize", "0 leaves no room for the response header"),
        (one_buffer == 0, "buffers.size", "must be more than 0"),
        (busy < largest, "busyBuffersSize", f"{show_size(busy)}{busy_note} must be at least {described}"),
        (
            busy > all_but_one,
            "busyBuffersSize",
            f"{show_size(busy)}{busy_note} must be at most the size of all buffers minus one buffer,"
            f" {number - 1} x {show_size(one_buffer)} = {show_size(all_but_one)}",
        ),
        (
            write < largest,
            "tempFileWriteSize",
            f"{show_size(write)}{write_note} must be at least {described}",
        ),
        (
            max_temp != 0 and max_temp < largest,
            "maxTempFileSize",
            f"{show_size(max_temp)} must be 0 (no temporary files) or at least {described}",
        ),
    )
    return next(((field, why) for refused, field, why in rules if refused), None)


def _or_default(size: int | None, default: int) -> tuple[int, str]:
    """The size, or nginx's default for it with a note saying so (users should see where a number comes
    from when they never wrote it)."""
    if size is None:
        return default, " (unset: nginx's default, twice the larger of bufferSize and buffers.size)"
    return size, ""
