package fs

// CheckOptions reports whether mount would accept opts ("allow_other",
// "attr_timeout=1s", ...), with the error mount would give, which names an
// unknown option and lists the known ones. The webhook calls it at
// admission so a bad option refuses the pod instead of failing its sidecar.
func CheckOptions(opts []string) error {
	_, err := resolveOptions(&Config{Options: opts})
	return err
}
