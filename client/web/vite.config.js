import { defineConfig } from 'vite';

// `npm run dev` serves the client on :5173 and forwards Socket.IO to a local Roundtable server
// (`make run`, port 5020); the production build goes to dist/, which the server serves at `/`.
export default defineConfig({
  build: {
    outDir: 'dist',
    emptyOutDir: true,
  },
  server: {
    proxy: {
      '/socket.io': { target: 'http://127.0.0.1:5020', ws: true },
    },
  },
});
