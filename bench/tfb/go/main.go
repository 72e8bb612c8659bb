// The TechEmpower test types on Go's net/http with pgx v4's pgxpool, written
// the way the Go entries of TechEmpower/FrameworkBenchmarks write them
// (go-std's pgx flavour): statements prepared on every new connection, one
// pool shared by all goroutines, GOMAXPROCS at the number of cores,
// html/template for the fortunes.
//
//	DATABASE_URL=postgres://user:pw@127.0.0.1:5432/db?sslmode=disable \
//	    tfb-go -listen 127.0.0.1:8080 [-pool N]
//
// Built offline from Debian's Go packages (bench/tfb/go/build.sh).
package main

import (
	"context"
	"encoding/json"
	"flag"
	"html/template"
	"log"
	"math/rand"
	"net/http"
	"os"
	"runtime"
	"sort"
	"strconv"

	"github.com/jackc/pgx/v4"
	"github.com/jackc/pgx/v4/pgxpool"
)

const (
	worldRowCount = 10000
	selectSQL     = "SELECT id, randomNumber FROM World WHERE id = $1"
	updateSQL     = "UPDATE World SET randomNumber = $1 WHERE id = $2"
	fortuneSQL    = "SELECT id, message FROM Fortune"
	helloWorld    = "Hello, World!"
)

type World struct {
	ID           int32 `json:"id"`
	RandomNumber int32 `json:"randomNumber"`
}

type Fortune struct {
	ID      int32
	Message string
}

type Message struct {
	Message string `json:"message"`
}

var (
	db        *pgxpool.Pool
	fortunesT = template.Must(template.New("fortunes").Parse(`<!DOCTYPE html><html><head><title>Fortunes</title></head><body><table><tr><th>id</th><th>message</th></tr>{{range .}}<tr><td>{{.ID}}</td><td>{{.Message}}</td></tr>{{end}}</table></body></html>`))
)

func randomID() int32 {
	return int32(rand.Intn(worldRowCount) + 1)
}

// queriesParam: the query count, 1..500, 1 for anything not a number.
func queriesParam(r *http.Request) int {
	n, err := strconv.Atoi(r.URL.Query().Get("queries"))
	if err != nil || n < 1 {
		return 1
	}
	if n > 500 {
		return 500
	}
	return n
}

func writeJSON(w http.ResponseWriter, v interface{}) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	h := w.Header()
	h.Set("Server", "Go")
	h.Set("Content-Type", "application/json")
	h.Set("Content-Length", strconv.Itoa(len(b)))
	w.Write(b)
}

func jsonHandler(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, &Message{Message: helloWorld})
}

func plaintextHandler(w http.ResponseWriter, r *http.Request) {
	h := w.Header()
	h.Set("Server", "Go")
	h.Set("Content-Type", "text/plain")
	h.Set("Content-Length", "13")
	w.Write([]byte(helloWorld))
}

func fetchWorld(ctx context.Context, w *World) error {
	return db.QueryRow(ctx, "select", randomID()).Scan(&w.ID, &w.RandomNumber)
}

func dbHandler(w http.ResponseWriter, r *http.Request) {
	var world World
	if err := fetchWorld(r.Context(), &world); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, &world)
}

func queriesHandler(w http.ResponseWriter, r *http.Request) {
	n := queriesParam(r)
	worlds := make([]World, n)
	for i := range worlds {
		if err := fetchWorld(r.Context(), &worlds[i]); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
	}
	writeJSON(w, worlds)
}

func updatesHandler(w http.ResponseWriter, r *http.Request) {
	n := queriesParam(r)
	worlds := make([]World, n)
	for i := range worlds {
		if err := fetchWorld(r.Context(), &worlds[i]); err != nil {
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		worlds[i].RandomNumber = randomID()
	}
	// in id order, so that concurrent requests cannot deadlock
	sorted := make([]World, n)
	copy(sorted, worlds)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	batch := &pgx.Batch{}
	for _, s := range sorted {
		batch.Queue("update", s.RandomNumber, s.ID)
	}
	if err := db.BeginFunc(r.Context(), func(tx pgx.Tx) error {
		return tx.SendBatch(r.Context(), batch).Close()
	}); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	writeJSON(w, worlds)
}

func fortunesHandler(w http.ResponseWriter, r *http.Request) {
	rows, err := db.Query(r.Context(), "fortune")
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fortunes := make([]Fortune, 0, 16)
	for rows.Next() {
		var f Fortune
		if err := rows.Scan(&f.ID, &f.Message); err != nil {
			rows.Close()
			http.Error(w, err.Error(), http.StatusInternalServerError)
			return
		}
		fortunes = append(fortunes, f)
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	fortunes = append(fortunes, Fortune{Message: "Additional fortune added at request time."})
	sort.Slice(fortunes, func(i, j int) bool { return fortunes[i].Message < fortunes[j].Message })
	h := w.Header()
	h.Set("Server", "Go")
	h.Set("Content-Type", "text/html; charset=utf-8")
	if err := fortunesT.Execute(w, fortunes); err != nil {
		log.Print(err)
	}
}

func main() {
	listen := flag.String("listen", "127.0.0.1:8080", "address to listen on, HOST:PORT")
	pool := flag.Int("pool", 4*runtime.NumCPU(), "database connections in the pool")
	flag.Parse()
	url := os.Getenv("DATABASE_URL")
	if url == "" {
		log.Fatal("set DATABASE_URL (postgres://user:password@host:port/db?sslmode=disable)")
	}
	runtime.GOMAXPROCS(runtime.NumCPU())
	cfg, err := pgxpool.ParseConfig(url)
	if err != nil {
		log.Fatalf("DATABASE_URL: %v", err)
	}
	cfg.MaxConns = int32(*pool)
	cfg.MinConns = int32(*pool)
	cfg.AfterConnect = func(ctx context.Context, c *pgx.Conn) error {
		for name, sql := range map[string]string{"select": selectSQL, "update": updateSQL, "fortune": fortuneSQL} {
			if _, err := c.Prepare(ctx, name, sql); err != nil {
				return err
			}
		}
		return nil
	}
	db, err = pgxpool.ConnectConfig(context.Background(), cfg)
	if err != nil {
		log.Fatalf("connect: %v", err)
	}
	http.HandleFunc("/json", jsonHandler)
	http.HandleFunc("/plaintext", plaintextHandler)
	http.HandleFunc("/db", dbHandler)
	http.HandleFunc("/queries", queriesHandler)
	http.HandleFunc("/updates", updatesHandler)
	http.HandleFunc("/fortunes", fortunesHandler)
	log.Fatal(http.ListenAndServe(*listen, nil))
}
