// Asks a Synthetic Network door what Synthetic Network's own JavaScript
// client (frontend/client/client.js of daily-co/synthetic-network) asks,
// the way it asks it in Node: bare paths, `Content-Type: application/json`
// even on GET, the whole configuration posted with its Content-Length,
// Basic credentials only through Node's `auth` option, and the flow-top
// profiles read as 2,048 slots of little-endian u64 (packets, bits, id).
// Written for weft's tests from what that client does; not its code.
//
//   node client.js PORT TOKEN_FILE|- STEP [ARG]
//
// STEP: get | post JSON | profile ingress|egress | page PATH
// (TOKEN_FILE "-": no credentials). Prints one JSON line: the status and
// what was read.
'use strict'
const http = require('http')
const fs = require('fs')

const [port, tokenFile, step, arg] = process.argv.slice(2)
const endpoint = { hostname: '127.0.0.1', port: Number(port) }
if (tokenFile !== '-') {
    endpoint.auth = 'weft:' + fs.readFileSync(tokenFile, 'utf8').trim()
}

function request(options, body) {
    return new Promise((resolve, reject) => {
        const req = http.request({ ...endpoint, ...options }, res => {
            const chunks = []
            res.on('data', c => chunks.push(c))
            res.on('end', () => resolve({ status: res.statusCode, headers: res.headers, body: Buffer.concat(chunks) }))
        })
        req.on('error', reject)
        if (body !== undefined) req.write(body)
        req.end()
    })
}

const PROTOCOLS = { 1: 'icmp', 6: 'tcp', 17: 'udp' }

// Its client's key of a flow: "ip:protocol:port", 0 standing for any.
function key(ip, protocol, port) {
    const quad = ip === 0 ? '*' : [0, 8, 16, 24].map(s => (ip >>> s) & 255).join('.')
    const proto = protocol === 0 ? '*' : (PROTOCOLS[protocol] || String(protocol))
    return `${quad}:${proto}:${port === 0 ? '*' : port}`
}

function parseProfile(buffer) {
    const flows = {}
    for (let i = 0; i < 2048; i++) {
        const packets = buffer.readBigInt64LE(i * 24)
        const bits = buffer.readBigInt64LE(i * 24 + 8)
        const id = buffer.readBigInt64LE(i * 24 + 16)
        if (packets > 0n) {
            const ip = Number(id & 0xffffffffn)
            const protocol = Number((id >> 32n) & 0xffn)
            const port = Number((id >> 48n) & 0xffffn)
            flows[key(ip, protocol, port)] = { packets: Number(packets), bits: Number(bits) }
        }
    }
    return flows
}

async function main() {
    let out
    if (step === 'get') {
        const r = await request({ path: '/qos', method: 'GET', headers: { 'Content-Type': 'application/json' } })
        out = { status: r.status, qos: r.status === 200 ? JSON.parse(r.body) : r.body.toString() }
    } else if (step === 'post') {
        const r = await request({
            path: '/qos', method: 'POST',
            headers: { 'Content-Type': 'application/json', 'Content-Length': arg.length },
        }, arg)
        out = { status: r.status, body: r.body.toString(), authenticate: r.headers['www-authenticate'] || null }
    } else if (step === 'profile') {
        const r = await request({
            path: `/top/${arg}.profile`, method: 'GET',
            headers: { 'Content-Type': 'application/octet-stream' },
        })
        out = { status: r.status, length: r.body.length, flows: r.status === 200 ? parseProfile(r.body) : {} }
    } else if (step === 'page') {
        const r = await request({ path: arg, method: 'GET' })
        out = {
            status: r.status, location: r.headers.location || null,
            authenticate: r.headers['www-authenticate'] || null,
            type: r.headers['content-type'] || null, body: r.body.toString(),
        }
    } else {
        throw new Error(`unknown step ${step}`)
    }
    console.log(JSON.stringify(out))
}

main().catch(e => { console.log(JSON.stringify({ error: String(e) })); process.exit(0) })
