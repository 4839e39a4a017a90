// Package secretfiles puts a volume's credential files where its URLs say
// they are.
//
// A metadata or storage URL names a credential file of the volume's Secret
// as Dir/KEY (for example passwordFile=/etc/podfs/secret/etcd-password),
// KEY being a key of the Secret. Where the Secret is mounted as a volume
// (a format Job), it is mounted at Dir and the URL works as it is. Where a
// process serves several volumes, each with its own Secret, it writes each
// Secret's data into a directory of its own (Write) and moves the URL's
// paths there (Rebase), so two volumes' keys of one name never meet.
package secretfiles

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
)

// Dir is where URLs name the files of their volume's Secret.
const Dir = "/etc/podfs/secret"

// keyRE is what Kubernetes accepts as a Secret key.
var keyRE = regexp.MustCompile(`^[-._a-zA-Z0-9]+$`)

// Rebase returns rawURL with every query value under Dir moved under dir.
// Nothing else changes: not the userinfo, not other values, not a bolt
// URL (whose '?' is part of its path).
func Rebase(rawURL, dir string) string {
	scheme, rest, ok := strings.Cut(rawURL, "://")
	if !ok || scheme == "bolt" {
		return rawURL
	}
	head, query, ok := strings.Cut(rest, "?")
	if !ok {
		return rawURL
	}
	dir = strings.TrimRight(dir, "/")
	parts := strings.Split(query, "&")
	for i, p := range parts {
		k, v, ok := strings.Cut(p, "=")
		if ok && strings.HasPrefix(v, Dir+"/") {
			parts[i] = k + "=" + dir + v[len(Dir):]
		}
	}
	return scheme + "://" + head + "?" + strings.Join(parts, "&")
}

// Write makes dir hold exactly the Secret's data, one file per key, readable
// by this process's user only (0400 files in a 0700 directory). Files are
// written under a temporary name and renamed, so a reader never sees half
// a key; keys dir held before and data lacks are removed.
func Write(dir string, data map[string][]byte) error {
	for k := range data {
		if !keyRE.MatchString(k) || k == "." || k == ".." {
			return fmt.Errorf("secret key %q: not a file name (Kubernetes Secret keys are letters, digits, '-', '_' and '.')", k)
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the secret directory: %w", err)
	}
	if err := os.Chmod(dir, 0o700); err != nil {
		return fmt.Errorf("restrict the secret directory: %w", err)
	}
	for k, v := range data {
		p := filepath.Join(dir, k)
		tmp := filepath.Join(dir, ".tmp-"+k)
		if err := os.WriteFile(tmp, v, 0o400); err != nil {
			return errors.Join(fmt.Errorf("write secret key %s: %w", k, err), os.Remove(tmp))
		}
		if err := os.Rename(tmp, p); err != nil {
			return errors.Join(fmt.Errorf("place secret key %s: %w", k, err), os.Remove(tmp))
		}
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return fmt.Errorf("list the secret directory: %w", err)
	}
	for _, e := range ents {
		if _, keep := data[e.Name()]; !keep {
			if err := os.RemoveAll(filepath.Join(dir, e.Name())); err != nil {
				return fmt.Errorf("remove old secret key %s: %w", e.Name(), err)
			}
		}
	}
	return nil
}
