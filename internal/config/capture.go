package config

// CaptureFirstStaging is the captureFirst rule: the capture is an
// uncompressed local copy of the data, staged in a local destination
// directory, so with captureFirst at least one of dests must be local.
// config.Validate applies it to backup.paths (backupgen validate,
// check-config, and lib.nix's check, which TestNixCaptureFirstAgreesWithGo
// holds to this); the run's preflight applies it to the destinations still
// usable (a local one may be missing). nil when dests is empty: having no
// destination at all is another error.
func CaptureFirstStaging(dests []string) error {
	for _, d := range dests {
		if !IsRemote(d) {
			return nil
		}
	}
	if len(dests) == 0 {
		return nil
	}
	return &FieldError{Key: "backup.captureFirst", Msg: "no usable local destination to stage the capture in " +
		"(the capture is a local copy of the data; every usable destination is remote): " +
		"add a local directory to backup.paths or turn captureFirst off"}
}
