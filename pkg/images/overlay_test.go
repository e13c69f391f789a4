package images

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetOverlay(t *testing.T) {
	pushed := []Pushed{
		{Component: "activator", Tag: "r.example:5000/thaw/activator:v1", Digest: "sha256:aa"},
		{Component: "autoscaler", Tag: "r.example:5000/thaw/autoscaler:v1", Digest: "sha256:bb"},
	}
	want := "images:\n" +
		"  - name: ko://knative.dev/serving/cmd/activator\n    newName: r.example:5000/thaw/activator\n    digest: sha256:aa\n" +
		"  - name: ko://knative.dev/serving/cmd/autoscaler\n    newName: r.example:5000/thaw/autoscaler\n    digest: sha256:bb\n"
	head := "# comment kept\napiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nresources:\n  - a.yaml\n"
	for _, tc := range []struct {
		name, in, want string
		wantErr        bool
	}{
		{name: "replaces images", in: head + "images:\n  - name: thaw-activator\n    newName: old\n    newTag: dev\n", want: head + want},
		{name: "adds images", in: head, want: head + "\n" + want},
		{name: "images not last", in: head + "images:\n  - name: x\npatches: []\n", wantErr: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := filepath.Join(t.TempDir(), "kustomization.yaml")
			if err := os.WriteFile(p, []byte(tc.in), 0o644); err != nil {
				t.Fatal(err)
			}
			err := SetOverlay(p, pushed)
			if (err != nil) != tc.wantErr {
				t.Fatalf("SetOverlay: %v", err)
			}
			got, _ := os.ReadFile(p)
			if !tc.wantErr && string(got) != tc.want {
				t.Fatalf("kustomization:\n%s\nwant:\n%s", got, tc.want)
			}
			if tc.wantErr && string(got) != tc.in {
				t.Fatal("a refused edit changed the file")
			}
		})
	}
	// What it wrote reads back; so does the checked-in overlay (the lab's images).
	p := filepath.Join(t.TempDir(), "kustomization.yaml")
	if err := os.WriteFile(p, []byte(head+want), 0o644); err != nil {
		t.Fatal(err)
	}
	if got, err := ReadOverlay(p); err != nil || got["activator"] != "r.example:5000/thaw/activator@sha256:aa" || got["autoscaler"] != "r.example:5000/thaw/autoscaler@sha256:bb" {
		t.Fatalf("ReadOverlay = %v, %v", got, err)
	}
	if got, err := ReadOverlay("../../config/overlays/thaw/kustomization.yaml"); err != nil || got["activator"] != Repository("ko.local/thaw", "activator")+":"+DefaultTag {
		t.Fatalf("ReadOverlay(config/overlays/thaw) = %v, %v", got, err)
	}
	// Without a digest (a tag only), newTag.
	if got := OverlayImages([]Pushed{{Component: "activator", Tag: "ko.local/thaw/activator:dev"}}); !strings.Contains(got, "newName: ko.local/thaw/activator\n    newTag: dev\n") {
		t.Fatalf("OverlayImages = %q", got)
	}
}
