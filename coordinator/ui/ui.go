// Package ui serves the coordinator's dashboard: one HTML page, a style
// sheet and a hand-written script, embedded in the binary so that the
// dashboard needs no network access beyond the coordinator. The files hold
// no data. The script reads the HTTP API and the event stream of the
// coordinator it was loaded from, sending the API token that the user
// enters, so the files themselves are served without a token.
package ui

import (
	"embed"
	"io/fs"
	"net/http"
)

//go:embed assets
var assets embed.FS

// contentSecurityPolicy lets the page load only its own files and talk
// only to its own origin, so that text from a task's output or a worker's
// labels can never run as script.
const contentSecurityPolicy = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; " +
	"connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'"

// Handler returns the handler of the dashboard's files for requests under
// prefix, such as "/ui/". The page is prefix itself.
func Handler(prefix string) http.Handler {
	files, err := fs.Sub(assets, "assets")
	if err != nil {
		// The embed directive guarantees the folder.
		panic("ui: embedded assets missing: " + err.Error())
	}
	fileServer := http.StripPrefix(prefix, http.FileServerFS(files))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		h := w.Header()
		h.Set("Content-Security-Policy", contentSecurityPolicy)
		h.Set("X-Content-Type-Options", "nosniff")
		h.Set("Referrer-Policy", "no-referrer")
		// Embedded files carry no modification time to revalidate
		// against, so a browser fetches them again on each load. That
		// keeps them in step with the coordinator's version, and together
		// they are about 30 KiB.
		h.Set("Cache-Control", "no-cache")
		fileServer.ServeHTTP(w, r)
	})
}

// Size returns the total size in bytes of the embedded files.
func Size() int64 {
	var total int64
	_ = fs.WalkDir(assets, "assets", func(_ string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		info, err := d.Info()
		if err != nil {
			return err
		}
		total += info.Size()
		return nil
	})
	return total
}
