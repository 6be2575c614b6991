"""Every allow-list the API accepts, defined once.

The pydantic models use these as field types and `hack/gen_crds.py` copies the same `pattern`/`maxLength`
into the CRD schemas, so the API server and the model can never disagree. Patterns are written in the
common subset of Go RE2 (the API server) and Rust regex (pydantic-core): no look-around, and `$` means end
of text (a trailing newline does not match, unlike Python's `re`).

None of these admits a character that is structural in nginx or keepalived configuration: whitespace
other than where stated, `;`, braces, quotes, `#`, `!`, `$`, backslashes or control characters.
"""

from __future__ import annotations

from typing import Annotated

from pydantic import StringConstraints

_OCTET = r"(25[0-5]|2[0-4][0-9]|1[0-9]{2}|[1-9]?[0-9])"
_IPV4 = rf"{_OCTET}(\.{_OCTET}){{3}}"
_DNS_LABEL = r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?"
_DNS_SUBDOMAIN = rf"{_DNS_LABEL}(\.{_DNS_LABEL})*"
# Host names as users write them (any case); nginx compares server names case-insensitively.
_HOST_LABEL = r"[A-Za-z0-9]([-A-Za-z0-9]{0,61}[A-Za-z0-9])?"
_HOSTNAME = rf"{_HOST_LABEL}(\.{_HOST_LABEL})*"
# A path segment may start with one dot (`/.well-known`) but `.` and `..` segments never match.
_PATH_SEGMENT = r"\.?[A-Za-z0-9_~-][A-Za-z0-9._~-]*"
_URL_PATH = rf"(/{_PATH_SEGMENT})*/?"

IPV4_PATTERN = rf"^{_IPV4}$"
IPV4_CIDR_PATTERN = rf"^{_IPV4}/([89]|[12][0-9]|3[0-2])$"
DNS_LABEL_PATTERN = rf"^{_DNS_LABEL}$"
DNS_SUBDOMAIN_PATTERN = rf"^{_DNS_SUBDOMAIN}$"
HOST_PATTERN = rf"^({_IPV4}|{_HOSTNAME})$"
SERVER_NAME_PATTERN = rf"^(\*\.)?({_IPV4}|{_HOSTNAME})$"
INTERFACE_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,14}$"
UNIX_USER_PATTERN = r"^[a-z_][a-z0-9_-]{0,31}$"
SSH_HOST_KEY_PATTERN = (
    r"^(ssh-ed25519|ssh-rsa|ecdsa-sha2-nistp256|ecdsa-sha2-nistp384|ecdsa-sha2-nistp521)"
    r" [A-Za-z0-9+/]+={0,3}$"
)
SECRET_KEY_PATTERN = r"^[-._a-zA-Z0-9]{1,253}$"  # noqa: S105 - a pattern, not a secret
# Node paths a pair may name. Whoever edits a pair already runs nginx and keepalived as root on its nodes;
# these keep the files root writes (configuration, the health-check script root runs, the pid file, logs,
# cache) in the services' own places instead of anywhere on the node.
NGINX_CONFIG_FILE_PATTERN = rf"^/etc/nginx(/{_PATH_SEGMENT})+$"
KEEPALIVED_CONFIG_FILE_PATTERN = rf"^/etc/keepalived(/{_PATH_SEGMENT})+$"
RUN_FILE_PATTERN = rf"^/run(/{_PATH_SEGMENT})+$"
NGINX_LOG_DIR_PATTERN = rf"^/var/log/nginx(/{_PATH_SEGMENT})*$"
NGINX_CACHE_DIR_PATTERN = rf"^/var/cache/nginx(/{_PATH_SEGMENT})*$"
SYSTEMD_UNIT_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}$"
NGINX_SIZE_PATTERN = r"^[0-9]{1,9}[kKmM]?$"
NGINX_TIME_PATTERN = r"^[0-9]{1,9}(ms|s|m|h|d)?$"
NGINX_VARIABLE_PATTERN = r"^[a-z_][a-z0-9_]{0,63}$"
# What an Upstream may hash on: a closed list of request properties, or a named cookie, query argument or
# request header. Anything else could be a variable nginx does not know (nginx -t fails the whole pair) or
# one that carries nothing per request.
HASH_VARIABLE_PATTERN = (
    r"^(request_uri|uri|remote_addr|binary_remote_addr|host|http_host|server_name"
    r"|(cookie|arg|http)_[a-z0-9]([a-z0-9_]{0,55}[a-z0-9])?)$"
)
NGINX_NAME_PATTERN = r"^[a-z][a-z0-9_]{0,62}$"
CHARSET_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_-]{0,31}$"
MIME_TYPE_PATTERN = r"^[a-z0-9][a-z0-9.+-]{0,63}/[a-z0-9*][a-z0-9.+-]{0,126}$"
# Punctuation only: nginx log formats are rendered single-quoted with `${variable}` references, so a
# literal never needs letters, and without letters no literal can spell a directive.
LOG_LITERAL_PATTERN = r'^[ \[\]"|:,/=()@+-]{1,32}$'
HEADER_NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9-]{0,63}$"
# Dots only one at a time: a header value has no use for `..`, and may reach the backend as a path.
_HEADER_VALUE_CHARACTER = r"[A-Za-z0-9_~:/=,+*@-]"
HEADER_VALUE_PATTERN = rf"^\.?{_HEADER_VALUE_CHARACTER}+(\.{_HEADER_VALUE_CHARACTER}+)*\.?$"
LOCATION_PATH_PATTERN = rf"^/$|^(/{_PATH_SEGMENT})+/?$"
PROXY_URL_PATTERN = rf"^https?://({_IPV4}|{_HOSTNAME})(:[0-9]{{1,5}})?{_URL_PATH}$"
REDIRECT_URL_PATTERN = PROXY_URL_PATTERN
LABEL_KEY_PATTERN = rf"^({_DNS_SUBDOMAIN}/)?[A-Za-z0-9]([-A-Za-z0-9_.]{{0,61}}[A-Za-z0-9])?$"
LABEL_VALUE_PATTERN = r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$"
# Secret material is never a field of a resource, but it is written into files on the nodes.
VRRP_AUTH_PASS_PATTERN = r"^[A-Za-z0-9._+=-]{1,8}$"  # noqa: S105 - a pattern, not a secret

IPv4Address = Annotated[str, StringConstraints(pattern=IPV4_PATTERN, max_length=15)]
IPv4Cidr = Annotated[str, StringConstraints(pattern=IPV4_CIDR_PATTERN, max_length=18)]
DnsLabel = Annotated[str, StringConstraints(pattern=DNS_LABEL_PATTERN, max_length=63)]
DnsSubdomain = Annotated[str, StringConstraints(pattern=DNS_SUBDOMAIN_PATTERN, max_length=253)]
Host = Annotated[str, StringConstraints(pattern=HOST_PATTERN, max_length=253)]
ServerName = Annotated[str, StringConstraints(pattern=SERVER_NAME_PATTERN, max_length=253)]
InterfaceName = Annotated[str, StringConstraints(pattern=INTERFACE_PATTERN, max_length=15)]
UnixUser = Annotated[str, StringConstraints(pattern=UNIX_USER_PATTERN, max_length=32)]
SshHostKey = Annotated[str, StringConstraints(pattern=SSH_HOST_KEY_PATTERN, max_length=8300)]
SecretKey = Annotated[str, StringConstraints(pattern=SECRET_KEY_PATTERN, max_length=253)]
NginxConfigFile = Annotated[str, StringConstraints(pattern=NGINX_CONFIG_FILE_PATTERN, max_length=255)]
KeepalivedConfigFile = Annotated[
    str, StringConstraints(pattern=KEEPALIVED_CONFIG_FILE_PATTERN, max_length=255)
]
RunFile = Annotated[str, StringConstraints(pattern=RUN_FILE_PATTERN, max_length=255)]
NginxLogDir = Annotated[str, StringConstraints(pattern=NGINX_LOG_DIR_PATTERN, max_length=255)]
NginxCacheDir = Annotated[str, StringConstraints(pattern=NGINX_CACHE_DIR_PATTERN, max_length=255)]
SystemdUnit = Annotated[str, StringConstraints(pattern=SYSTEMD_UNIT_PATTERN, max_length=64)]
NginxSize = Annotated[str, StringConstraints(pattern=NGINX_SIZE_PATTERN, max_length=10)]
NginxTime = Annotated[str, StringConstraints(pattern=NGINX_TIME_PATTERN, max_length=11)]
NginxVariable = Annotated[str, StringConstraints(pattern=NGINX_VARIABLE_PATTERN, max_length=64)]
HashVariable = Annotated[str, StringConstraints(pattern=HASH_VARIABLE_PATTERN, max_length=64)]
NginxName = Annotated[str, StringConstraints(pattern=NGINX_NAME_PATTERN, max_length=63)]
Charset = Annotated[str, StringConstraints(pattern=CHARSET_PATTERN, max_length=32)]
MimeType = Annotated[str, StringConstraints(pattern=MIME_TYPE_PATTERN, max_length=192)]
LogLiteral = Annotated[str, StringConstraints(pattern=LOG_LITERAL_PATTERN, max_length=32)]
HeaderName = Annotated[str, StringConstraints(pattern=HEADER_NAME_PATTERN, max_length=64)]
HeaderValue = Annotated[str, StringConstraints(pattern=HEADER_VALUE_PATTERN, max_length=256)]
LocationPath = Annotated[str, StringConstraints(pattern=LOCATION_PATH_PATTERN, max_length=1024)]
ProxyUrl = Annotated[str, StringConstraints(pattern=PROXY_URL_PATTERN, max_length=2048)]
LabelKey = Annotated[str, StringConstraints(pattern=LABEL_KEY_PATTERN, max_length=317)]
LabelValue = Annotated[str, StringConstraints(pattern=LABEL_VALUE_PATTERN, max_length=63)]
