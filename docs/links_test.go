// Package docs holds the project's documentation; its test checks that
// every relative link in README.md, nixos/README.md and docs/*.md points at
// a file that exists, and every #anchor at a heading of its target.
package docs

import (
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// linkRE matches a Markdown link's target: [text](target).
var linkRE = regexp.MustCompile(`\]\(([^)\s]+)\)`)

// markdownFiles are the documents whose links are checked.
func markdownFiles(t *testing.T) []string {
	t.Helper()
	files, err := filepath.Glob("*.md")
	if err != nil {
		t.Fatal(err)
	}
	return append(files, "../README.md", "../nixos/README.md")
}

// links returns the link targets of a Markdown document, outside fenced
// code blocks.
func links(doc string) []string {
	var out []string
	fenced := false
	for _, line := range strings.Split(doc, "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "```") {
			fenced = !fenced
			continue
		}
		if fenced {
			continue
		}
		for _, m := range linkRE.FindAllStringSubmatch(line, -1) {
			out = append(out, m[1])
		}
	}
	return out
}

// anchors returns the GitHub anchors of a document's headings: lower case,
// punctuation dropped, spaces as hyphens.
func anchors(doc string) map[string]bool {
	drop := regexp.MustCompile(`[^\p{L}\p{N} _-]`)
	out := map[string]bool{}
	for _, line := range strings.Split(doc, "\n") {
		if !strings.HasPrefix(line, "#") {
			continue
		}
		h := strings.TrimSpace(strings.TrimLeft(line, "#"))
		out[strings.ReplaceAll(drop.ReplaceAllString(strings.ToLower(h), ""), " ", "-")] = true
	}
	return out
}

func TestRelativeLinks(t *testing.T) {
	checked := 0
	for _, file := range markdownFiles(t) {
		data, err := os.ReadFile(file)
		if err != nil {
			t.Fatal(err)
		}
		for _, link := range links(string(data)) {
			if strings.Contains(link, "://") || strings.HasPrefix(link, "mailto:") {
				continue
			}
			target, anchor, _ := strings.Cut(link, "#")
			path := file
			if target != "" {
				path = filepath.Join(filepath.Dir(file), filepath.FromSlash(target))
			}
			checked++
			if _, err := os.Stat(path); err != nil {
				t.Errorf("%s: link %q: %v", file, link, err)
				continue
			}
			if anchor == "" || !strings.HasSuffix(path, ".md") {
				continue
			}
			doc, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !anchors(string(doc))[anchor] {
				t.Errorf("%s: link %q: %s has no heading with anchor #%s", file, link, path, anchor)
			}
		}
	}
	if checked < 20 {
		t.Errorf("only %d relative links found; is the link pattern broken?", checked)
	}
}

// TestLinkCheckCatchesBreakage guards the checker: a missing file and a
// missing anchor are found, a fenced block is skipped.
func TestLinkCheckCatchesBreakage(t *testing.T) {
	doc := "# Title Here\n[a](missing.md) [b](#title-here)\n```\n[c](in-code)\n```\n"
	if got := links(doc); len(got) != 2 || got[0] != "missing.md" || got[1] != "#title-here" {
		t.Errorf("links = %q", got)
	}
	if a := anchors(doc); !a["title-here"] || a["missing"] {
		t.Errorf("anchors = %v", a)
	}
}
