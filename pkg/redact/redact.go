// Package redact hides the secrets a metadata or storage URL may carry, so
// the URL can be printed in logs, errors, events and podfs status.
//
// Two places hold secrets: the password of the userinfo
// (etcd://user:PASSWORD@host:port/volume) and the values of query
// parameters whose names say they are secret (key, password, secret, token
// and their spellings, e.g. rados://pool?key=SECRET). Both become REDACTED;
// everything else, file paths of keyrings, certificates and password files
// included, is kept, since those name where a secret is, not the secret.
// The path of a bolt:// or file:// URL is kept as it is.
//
// URL works on the text as written, without parsing and re-encoding it,
// so a redacted URL reads like the original, and a URL that does not
// parse is still redacted.
package redact

import (
	"net/url"
	"strings"
)

// Mask replaces every secret value.
const Mask = "REDACTED"

// secretParams are the query parameter names (lower case, '_' and '-'
// removed) whose values are secrets.
var secretParams = map[string]bool{
	"key":      true,
	"password": true,
	"passwd":   true,
	"pass":     true,
	"pwd":      true,
	"secret":   true,
	"token":    true,
	"authkey":  true,
	"apikey":   true,
}

// IsSecretParam reports whether a query parameter's value is redacted.
func IsSecretParam(name string) bool {
	if n, err := url.QueryUnescape(name); err == nil {
		name = n
	}
	name = strings.NewReplacer("_", "", "-", "").Replace(strings.ToLower(name))
	return secretParams[name]
}

// URL returns u with its userinfo password and secret query values replaced
// by Mask. A string that is no URL comes back unchanged.
func URL(u string) string {
	scheme, rest, ok := strings.Cut(u, "://")
	if !ok {
		return u
	}
	// The query starts at the first '?': a password with a '?' must be
	// percent-encoded for the URL to parse at all.
	head, query, hasQuery := strings.Cut(rest, "?")
	var b strings.Builder
	b.Grow(len(u) + len(Mask))
	b.WriteString(scheme)
	b.WriteString("://")
	if scheme == "bolt" || scheme == "file" {
		// A local path: '@' and ':' are part of a file name.
		b.WriteString(head)
	} else {
		b.WriteString(userinfo(head))
	}
	if hasQuery {
		b.WriteByte('?')
		b.WriteString(params(query))
	}
	return b.String()
}

// userinfo redacts the password in "user:password@host...". The last '@'
// before the query ends the userinfo, so an unescaped '@' or '/' in the
// password is hidden too.
func userinfo(head string) string {
	at := strings.LastIndexByte(head, '@')
	if at < 0 {
		return head
	}
	user, _, hasPass := strings.Cut(head[:at], ":")
	if !hasPass {
		return head
	}
	return user + ":" + Mask + head[at:]
}

// params redacts the values of secret parameters in a raw query.
func params(q string) string {
	parts := strings.Split(q, "&")
	for i, p := range parts {
		name, _, hasValue := strings.Cut(p, "=")
		if hasValue && IsSecretParam(name) {
			parts[i] = name + "=" + Mask
		}
	}
	return strings.Join(parts, "&")
}

// Text redacts every URL inside free text, such as an error message that
// quotes one: each run of characters around "://" up to white space, a
// quote, a parenthesis or an angle bracket is taken as a URL.
func Text(s string) string {
	if !strings.Contains(s, "://") {
		return s
	}
	var b strings.Builder
	b.Grow(len(s) + len(Mask))
	for {
		i := strings.Index(s, "://")
		if i < 0 {
			b.WriteString(s)
			return b.String()
		}
		start := strings.LastIndexFunc(s[:i], isBoundary) + 1
		end := i + 3
		if j := strings.IndexFunc(s[end:], isBoundary); j >= 0 {
			end += j
		} else {
			end = len(s)
		}
		b.WriteString(s[:start])
		b.WriteString(URL(s[start:end]))
		s = s[end:]
	}
}

func isBoundary(r rune) bool {
	switch r {
	case ' ', '\t', '\n', '\r', '"', '\'', '`', '(', ')', '<', '>':
		return true
	}
	return false
}
