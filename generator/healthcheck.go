package generator

import (
	"strconv"
	"strings"

	"github.com/backupgen/backupgen/internal/config"
)

// nixHealthCheck renders backup.healthCheck as a Nix value: null, or an
// attribute set with the keys that are set (the option's submodule gives
// the others their defaults).
func nixHealthCheck(h *config.HealthCheck) string {
	if h == nil {
		return "null"
	}
	var parts []string
	if h.URL != "" {
		parts = append(parts, "url = "+nixString(h.URL)+";")
	}
	if h.TCP != "" {
		parts = append(parts, "tcp = "+nixString(h.TCP)+";")
	}
	if len(h.Command) > 0 {
		parts = append(parts, "command = "+nixStringList(h.Command)+";")
	}
	parts = append(parts, "timeoutSec = "+strconv.Itoa(h.TimeoutSecOrDefault())+";")
	return "{ " + strings.Join(parts, " ") + " }"
}
