package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"os"

	v1 "github.com/google/go-containerregistry/pkg/v1"

	"github.com/thaw-dev/thaw/pkg/images"
	"github.com/thaw-dev/thaw/pkg/lab/build"
)

func imagesCommands() map[string]command {
	return map[string]command{
		"push": {"build Thaw's activator and autoscaler images and push them to --registry", imagesPush},
	}
}

func imagesPush(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("thaw images push", flag.ContinueOnError)
	reg := fs.String("registry", "", "repository prefix, e.g. ghcr.io/me/thaw: pushes <registry>/activator and <registry>/autoscaler")
	tag := fs.String("tag", images.DefaultTag, "tag of both images")
	platforms := fs.String("platform", "linux/amd64", "comma-separated platforms of the OCI index, e.g. linux/amd64,linux/arm64")
	overlay := fs.String("overlay", "", "kustomization.yaml whose images to point at the pushed digests (e.g. config/overlays/thaw/kustomization.yaml)")
	insecure := fs.Bool("insecure", false, "plain HTTP to the registry (loopback and private addresses use it anyway)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *reg == "" {
		return errors.New("--registry is required")
	}
	plats, err := images.ParsePlatforms(*platforms)
	if err != nil {
		return err
	}
	repo, err := build.FindRepoRoot()
	if err != nil {
		return err
	}
	tmp, err := os.MkdirTemp("", "thaw-images-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	bins, err := images.BuildBinaries(ctx, repo, tmp, images.Packages, plats)
	if err != nil {
		return err
	}
	idx := map[string]v1.ImageIndex{}
	for c, b := range bins {
		if idx[c], err = images.Index(c, b); err != nil {
			return err
		}
	}
	pushed, err := images.Push(ctx, idx, images.PushOptions{Registry: *reg, Tag: *tag, Insecure: *insecure})
	if err != nil {
		return err
	}
	for _, p := range pushed {
		fmt.Printf("%s %s\n", p.Component, p.Ref())
	}
	if *overlay != "" {
		if err := images.SetOverlay(*overlay, pushed); err != nil {
			return err
		}
		fmt.Printf("%s points at them\n", *overlay)
	}
	return nil
}
