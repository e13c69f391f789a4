package images

import (
	"bytes"
	"fmt"
	"os"
	"strings"

	"sigs.k8s.io/yaml"
)

// OverlayImageName is the image upstream's manifests name for component, a ko placeholder
// (ko://knative.dev/serving/cmd/activator); the overlay's images transformer maps it to a real reference.
func OverlayImageName(component string) string { return "ko://knative.dev/serving/cmd/" + component }

// ReadOverlay returns the image the kustomization sets for each component (name:tag or name@digest),
// the images a `thaw swap` without image flags runs.
func ReadOverlay(kustomization string) (map[string]string, error) {
	b, err := os.ReadFile(kustomization)
	if err != nil {
		return nil, err
	}
	var k struct {
		Images []struct {
			Name, NewName, NewTag, Digest string
		} `json:"images"`
	}
	if err := yaml.Unmarshal(b, &k); err != nil {
		return nil, fmt.Errorf("%s: %w", kustomization, err)
	}
	out := map[string]string{}
	for _, c := range Components {
		for _, im := range k.Images {
			if im.Name != OverlayImageName(c) {
				continue
			}
			ref := im.NewName
			if ref == "" {
				ref = im.Name
			}
			switch {
			case im.Digest != "":
				ref += "@" + im.Digest
			case im.NewTag != "":
				ref += ":" + im.NewTag
			}
			out[c] = ref
		}
		if out[c] == "" {
			return nil, fmt.Errorf("%s sets no image for %s", kustomization, OverlayImageName(c))
		}
	}
	return out, nil
}

// SetOverlay points the kustomization at pushed images, pinned by digest: its images section (which
// must be the file's last top-level key) is replaced, everything above it (comments included) is kept.
// It is what `kustomize edit set image thaw-activator=REF@DIGEST` would do, without kustomize.
func SetOverlay(kustomization string, pushed []Pushed) error {
	b, err := os.ReadFile(kustomization)
	if err != nil {
		return err
	}
	head, err := beforeImages(b)
	if err != nil {
		return fmt.Errorf("%s: %w", kustomization, err)
	}
	var buf bytes.Buffer
	buf.Write(head)
	buf.WriteString(OverlayImages(pushed))
	return os.WriteFile(kustomization, buf.Bytes(), 0o644)
}

// OverlayImages is the kustomization's images section for pushed.
func OverlayImages(pushed []Pushed) string {
	var b strings.Builder
	b.WriteString("images:\n")
	for _, p := range pushed {
		repo, _, _ := strings.Cut(p.Tag, "@")
		if i := strings.LastIndex(repo, ":"); i > strings.LastIndex(repo, "/") {
			repo = repo[:i]
		}
		fmt.Fprintf(&b, "  - name: %s\n    newName: %s\n", OverlayImageName(p.Component), repo)
		if p.Digest != "" {
			fmt.Fprintf(&b, "    digest: %s\n", p.Digest)
		} else {
			fmt.Fprintf(&b, "    newTag: %s\n", p.Tag[len(repo)+1:])
		}
	}
	return b.String()
}

// beforeImages returns the part of a kustomization above its top-level images key, checking that no
// other top-level key follows it.
func beforeImages(b []byte) ([]byte, error) {
	lines := bytes.SplitAfter(b, []byte("\n"))
	at := -1
	for i, l := range lines {
		if bytes.HasPrefix(l, []byte("images:")) {
			at = i
			continue
		}
		top := len(l) > 0 && l[0] != ' ' && l[0] != '\t' && l[0] != '#' && l[0] != '-' && l[0] != '\n'
		if at >= 0 && top {
			return nil, fmt.Errorf("top-level %q follows images: keep images last", strings.TrimSpace(string(l)))
		}
	}
	if at < 0 {
		return append(append([]byte{}, b...), '\n'), nil
	}
	return bytes.Join(lines[:at], nil), nil
}
