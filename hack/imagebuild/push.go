package main

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/authn"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

// Environment variables push reads credentials and a CA from (flags win).
const (
	envUser     = "PODFS_REGISTRY_USERNAME"
	envPassword = "PODFS_REGISTRY_PASSWORD"
	envCA       = "PODFS_REGISTRY_CA"
)

// runPush pushes the image of a docker-archive tarball to a registry:
//
//	imagebuild push -tar bin/images/podfs.tar -ref registry.example.com/podfs/podfs:v1 \
//	  [-username U -password-stdin] [-ca-file ca.crt]
//
// Credentials: -username with the password on standard input, else
// $PODFS_REGISTRY_USERNAME/$PODFS_REGISTRY_PASSWORD, else the default
// keychain (~/.docker/config.json, $DOCKER_CONFIG, credential helpers), as
// docker push would. -ca-file (or $PODFS_REGISTRY_CA) adds a CA to the
// system's for the registry's certificate.
func runPush(stdin io.Reader, args []string) error {
	fs := flag.NewFlagSet("imagebuild push", flag.ContinueOnError)
	tarPath := fs.String("tar", "", "docker-archive tarball with one image (required)")
	refStr := fs.String("ref", "", "where to push, e.g. registry.example.com/podfs/podfs:v1 (required)")
	user := fs.String("username", os.Getenv(envUser), "registry user (default $"+envUser+")")
	passStdin := fs.Bool("password-stdin", false, "read the password from standard input (default $"+envPassword+")")
	caFile := fs.String("ca-file", os.Getenv(envCA), "PEM CA to trust for the registry, besides the system's (default $"+envCA+")")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *tarPath == "" || *refStr == "" || fs.NArg() > 0 {
		return errors.New("usage: imagebuild push -tar FILE -ref REF [-username U -password-stdin] [-ca-file CA]")
	}
	ref, err := name.ParseReference(*refStr)
	if err != nil {
		return fmt.Errorf("-ref %q: %w", *refStr, err)
	}
	img, err := tarball.ImageFromPath(*tarPath, nil)
	if err != nil {
		return fmt.Errorf("read image from %s: %w", *tarPath, err)
	}

	var auth remote.Option
	password := os.Getenv(envPassword)
	if *passStdin {
		line, err := bufio.NewReader(stdin).ReadString('\n')
		if err != nil && !errors.Is(err, io.EOF) {
			return fmt.Errorf("read the password from standard input: %w", err)
		}
		password = strings.TrimRight(line, "\r\n")
	}
	switch {
	case *user != "" && password == "":
		return fmt.Errorf("-username %s without a password: pass -password-stdin or set $%s", *user, envPassword)
	case *user == "" && *passStdin:
		return errors.New("-password-stdin needs -username (or $" + envUser + ")")
	case *user != "":
		auth = remote.WithAuth(&authn.Basic{Username: *user, Password: password})
	default:
		auth = remote.WithAuthFromKeychain(authn.DefaultKeychain)
	}

	transport, err := transportWithCA(*caFile)
	if err != nil {
		return err
	}

	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Minute)
	defer cancel()
	start := time.Now()
	if err := remote.Write(ref, img, auth, remote.WithTransport(transport), remote.WithContext(ctx)); err != nil {
		return fmt.Errorf("push %s: %w", ref, explainPushError(err))
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	slog.Info("image pushed", "ref", ref.String(), "digest", digest.String(), "took", time.Since(start).Round(time.Millisecond))
	// The digest on standard output, for scripts: REF@DIGEST pins it.
	fmt.Printf("%s@%s\n", ref.Context().String(), digest)
	return nil
}

// explainPushError adds what to do to the errors a first push usually meets.
func explainPushError(err error) error {
	var uerr x509.UnknownAuthorityError
	msg := err.Error()
	switch {
	case errors.As(err, &uerr) || strings.Contains(msg, "certificate signed by unknown authority"):
		return fmt.Errorf("%w (the registry's certificate is not trusted: pass -ca-file or set $%s)", err, envCA)
	case strings.Contains(msg, "UNAUTHORIZED") || strings.Contains(msg, "401 Unauthorized"):
		return fmt.Errorf("%w (the registry refused the credentials: -username and -password-stdin, $%s/$%s, or docker login)", err, envUser, envPassword)
	}
	return err
}

// remoteDigest reads the digest of ref's manifest from its registry.
func remoteDigest(ref name.Reference, auth authn.Authenticator, caFile string) (string, error) {
	transport, err := transportWithCA(caFile)
	if err != nil {
		return "", err
	}
	desc, err := remote.Head(ref, remote.WithAuth(auth), remote.WithTransport(transport))
	if err != nil {
		return "", err
	}
	return desc.Digest.String(), nil
}

// transportWithCA is go-containerregistry's default transport, trusting
// caFile's CA too when it is not "".
func transportWithCA(caFile string) (*http.Transport, error) {
	transport := remote.DefaultTransport.(*http.Transport).Clone()
	if caFile == "" {
		return transport, nil
	}
	pem, err := os.ReadFile(caFile)
	if err != nil {
		return nil, fmt.Errorf("-ca-file: %w", err)
	}
	pool, err := x509.SystemCertPool()
	if err != nil {
		pool = x509.NewCertPool()
	}
	if !pool.AppendCertsFromPEM(pem) {
		return nil, fmt.Errorf("-ca-file %s holds no PEM certificate", caFile)
	}
	transport.TLSClientConfig = &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}
	return transport, nil
}
